//! Measures what the link emulator itself costs: round-trip time and TCP throughput
//! through an `unlimited` emulated link versus a plain veth link with the same offload
//! settings. Run as root: `cargo run --release -p msocket-lab --example overhead`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use msocket_lab::probe::{connect_until, echo_round_trip, EchoServer};
use msocket_lab::{Access, LabConfig, LinkId, Netns, PhoneLab};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BULK: usize = 200 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !msocket_lab::is_root() {
        eprintln!("overhead: needs root and network namespaces: run it as root (after lab/setup.sh)");
        std::process::exit(1);
    }
    let lab = PhoneLab::build(LabConfig::default())?;
    let echo = EchoServer::start(lab.server(), 7000)?;
    let sink_port = 7001;
    let _sink = lab.server().spawn_runtime(move || sink(sink_port))?;

    // ping: one hop through an emulator (phone -> r-wifi) vs a plain veth hop (core -> server).
    let emu_ping = ping(lab.phone(), lab.gateway(Access::Wifi))?;
    let plain_ping = ping(lab.core(), lab.server_addr())?;
    println!("ping rtt min/avg over 200: through emulator {emu_ping}, plain veth {plain_ping}");

    // TCP echo RTT to the server: from the phone (one emulator on the path, plus two
    // router hops) and from the core (a plain veth hop).
    let server = lab.server_addr();
    let emu_rtt = tcp_rtt(
        lab.phone(),
        Some(lab.phone_addr(Access::Wifi).unwrap()),
        SocketAddr::from((server, echo.port())),
    )?;
    let plain_rtt = tcp_rtt(lab.core(), None, SocketAddr::from((server, echo.port())))?;
    println!("tcp echo rtt median of 200: phone via wifi emulator {emu_rtt:?}, core (no emulator) {plain_rtt:?}");

    let emu_tput = throughput(
        lab.phone(),
        Some(lab.phone_addr(Access::Wifi).unwrap()),
        SocketAddr::from((server, sink_port)),
    )?;
    let plain_tput = throughput(lab.core(), None, SocketAddr::from((server, sink_port)))?;
    println!("tcp throughput, {} MiB: via emulator {emu_tput:.0} Mbit/s, plain veth {plain_tput:.0} Mbit/s", BULK >> 20);
    let stats = lab.emulator(LinkId::Wifi).unwrap().stats();
    println!("wifi emulator: {stats:?}");

    // Accuracy of a configured delay.
    lab.set_link(LinkId::Wifi, "5ms".parse()?)?;
    let rtt5 = tcp_rtt(
        lab.phone(),
        Some(lab.phone_addr(Access::Wifi).unwrap()),
        SocketAddr::from((server, echo.port())),
    )?;
    println!("tcp echo rtt with wifi \"5ms\" (10 ms configured): {rtt5:?}");
    Ok(())
}

fn ping(ns: &Netns, to: Ipv4Addr) -> Result<String, Box<dyn std::error::Error>> {
    let out = ns
        .command("ping")
        .args(["-c", "200", "-i", "0.005", "-q", &to.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("min/avg"))
        .ok_or("no ping summary")?;
    let nums: Vec<&str> = line
        .split('=')
        .nth(1)
        .ok_or("bad ping summary")?
        .trim()
        .split('/')
        .collect();
    Ok(format!("{}/{} ms", nums[0], nums[1]))
}

fn tcp_rtt(
    ns: &Netns,
    bind: Option<Ipv4Addr>,
    to: SocketAddr,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let task = ns.spawn_runtime(move || async move {
        let mut s = connect_until(bind.map(Into::into), to, Duration::from_secs(10)).await?;
        s.set_nodelay(true)?;
        let mut v = Vec::new();
        for _ in 0..200 {
            v.push(echo_round_trip(&mut s, b"x").await?);
        }
        v.sort();
        Ok::<_, std::io::Error>(v[v.len() / 2])
    })?;
    Ok(task.join(Duration::from_secs(60))??)
}

fn throughput(
    ns: &Netns,
    bind: Option<Ipv4Addr>,
    to: SocketAddr,
) -> Result<f64, Box<dyn std::error::Error>> {
    let task = ns.spawn_runtime(move || async move {
        let mut s = connect_until(bind.map(Into::into), to, Duration::from_secs(10)).await?;
        let buf = vec![7u8; 1 << 16];
        let start = Instant::now();
        let mut sent = 0;
        while sent < BULK {
            s.write_all(&buf).await?;
            sent += buf.len();
        }
        s.shutdown().await?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack).await?;
        Ok::<_, std::io::Error>(BULK as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6)
    })?;
    Ok(task.join(Duration::from_secs(120))??)
}

/// Reads each connection to EOF, then answers with the byte count.
async fn sink(port: u16) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await?;
    loop {
        let (mut s, _) = l.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0u64;
            while let Ok(k) = s.read(&mut buf).await {
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            let _ = s.write_all(&n.to_be_bytes()).await;
        });
    }
}
