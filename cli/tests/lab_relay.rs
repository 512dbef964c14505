//! Relays and hole punching with the real binaries, in the two-phone lab
//! (`msocket_lab::TwoPhoneLab`): two phones, each with Wi-Fi behind a home NAT and
//! cellular behind a carrier-grade NAT (two translations), a public core with a services
//! host running `msocketd name` and `msocketd relay` (each relay on an address of its
//! own), and a public host. Access links "2ms", uplinks into the core "5ms", so that the
//! SYNs of a simultaneous open take realistic time to cross.
//!
//! Every flow is `msocket listen NAME --relay …` on one side and `msocket connect NAME`
//! on the other, both fed on stdin and read on stdout by the test, checked by SHA-256 both
//! ways (20 MB listener → client, and as much or a part of it back):
//!
//! - a listener behind NAT is reached through its relay by a client on the public host;
//! - phones behind different NATs (carrier-grade on cellular, home on Wi-Fi) connect
//!   relayed and go direct by hole punching (both NATs port-preserving);
//! - the NAT matrix {port-preserving, symmetric} on either side, four flows at once
//!   (`--bind` puts each on the right network): only port-preserving on both sides goes
//!   direct; the others stay relayed and their client says so;
//! - UDP is dropped by every router and msocket needs none;
//! - a phone whose networks let only TCP to port 443 out, with the name server and a relay
//!   on port 443: the flow works through the relay;
//! - the relay carrying a flow is killed (SIGKILL) mid-transfer, a second one configured:
//!   nothing is lost, and the gap is measured;
//! - both phones lose Wi-Fi at once while talking through a relay;
//! - the relay never sees plaintext: its traffic is captured (`AF_PACKET`) while a marker
//!   is sent both ways; the marker never appears, and the volume shows the flow passed
//!   (a plain TCP connection carrying the marker to the relay, captured first, shows that
//!   the capture would have seen it);
//! - the benchmark's lab figures (`msocket_bench::relay_lab`, in-process endpoints) are
//!   measured and consistent (20 MB transfers).
//!
//! The NATs drop unsolicited connection attempts, as RFC 5382 asks (the lab's default);
//! NATs that answer them with a reset are not tested here.
//!
//! The CLI logs at info, with hole punching and extra paths at debug; failure messages
//! carry every program's log (`MSOCKET_REAL_LOGS=1` prints them when a test passes too).
//! Needs root and network namespaces, so the tests are ignored unless asked for
//! (`--include-ignored`); asked for where they cannot run, they fail saying why. One test
//! at a time (a lock). The matrix waits for the failing cases to give up (three attempts:
//! about 45 s); the file takes about a minute and a half (two minutes with the benchmark).

#[cfg(target_os = "linux")]
mod real_programs_support;

#[cfg(target_os = "linux")]
mod lab_relay_support;

#[cfg(target_os = "linux")]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use msocket_lab::capture::Capture;
    use msocket_lab::{Access, Nat, Phone, PhoneNet, TwoPhoneConfig, RELAY_ADDRS};

    use super::lab_relay_support::*;

    /// Bound on a whole transfer once started (a few seconds when it works).
    const TRANSFER: Duration = Duration::from_secs(60);
    /// How long a relayed flow may take to go direct.
    const TO_DIRECT: Duration = Duration::from_secs(10);
    /// How long a flow whose punching cannot work may take to give up: three attempts of
    /// 3 s, 5 s and 30 s apart, and a margin.
    const TO_GIVE_UP: Duration = Duration::from_secs(55);
    const BIG: usize = 20 * MB;
    const RELAY_PORT: u16 = 443;
    const NAMES_PORT: u16 = 7450;
    /// The CLI's flow deadline: a flow without a path this long fails, loudly.
    const DEADLINE: &str = "20";

    /// Short access links, longer uplinks, UDP dropped, NATs as given.
    fn config(a: PhoneNet, b: PhoneNet) -> TwoPhoneConfig {
        let link = |n: PhoneNet| PhoneNet { wifi: "2ms".parse().unwrap(), cell: "2ms".parse().unwrap(), ..n };
        TwoPhoneConfig { phones: [link(a), link(b)], uplink: "5ms".parse().unwrap(), ..TwoPhoneConfig::default() }
    }

    fn port_preserving() -> TwoPhoneConfig {
        config(PhoneNet::all(Nat::PortPreserving), PhoneNet::all(Nat::PortPreserving))
    }

    /// The `after=` of a "went direct" line, in milliseconds.
    fn after_ms(line: &str) -> Option<f64> {
        let v = field(line, "after=");
        let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix("µs") {
            (n, 1e-3)
        } else if let Some(n) = v.strip_suffix("ns") {
            (n, 1e-6)
        } else {
            (v.strip_suffix('s')?, 1e3)
        };
        num.parse::<f64>().ok().map(|n| n * scale)
    }

    fn mbit(bytes: u64, took: Duration) -> f64 {
        bytes as f64 * 8.0 / took.as_secs_f64() / 1e6
    }

    /// The client's first subflow was relayed, through `relay`.
    fn assert_started_relayed(w: &World, listener: &End, client: &End, relay: &str) {
        let subs = client.subflows();
        let first = subs.first().unwrap_or_else(|| panic!("the client logged no subflow\n{}", w.logs(&[listener, client])));
        assert!(first.2 && first.1 == relay, "the client's first subflow {first:?} is not relayed through {relay}\n{}", w.logs(&[listener, client]));
        println!("{} the flow started relayed: {} -> {}", w.t(), first.0, first.1);
    }

    // -----------------------------------------------------------------------------------
    // a. A listener behind NAT, a client on the Internet
    // -----------------------------------------------------------------------------------

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn a_listener_behind_nat_is_reached_through_its_relay_from_the_internet() {
        let w = World::start(port_preserving(), NAMES_PORT);
        let relay = w.relay(0, RELAY_PORT);
        let mut listener = w.listen(w.lab.phone(Phone::A), "a-nat.lab", &[&relay], &["--deadline", DEADLINE], payload(BIG, 1), Feed::bulk());
        let mut client = w.connect(w.lab.public_host(), "a-nat.lab", &["--deadline", DEADLINE], payload(BIG, 2), Feed::bulk());
        let out = finish(&w, "nat/public", &mut listener, &mut client, TRANSFER);
        assert_started_relayed(&w, &listener, &client, &relay);
        // The listener published only addresses behind its NATs, which the client could
        // not reach: it was reached through the relay.
        let published = listener.line("listening on ").unwrap_or_default();
        assert!(published.contains("192.168.1.2") && !published.contains("172.16."), "{published}");
        println!(
            "{} 20 MB each way in {:.2} s ({:.0} Mbit/s both ways together); hole punching: {}",
            w.t(),
            out.took.as_secs_f64(),
            mbit(out.to_client.0 + out.to_listener.0, out.took),
            client.line(WENT_DIRECT).map_or("did not go direct".into(), |l| format!("went direct after {:.0} ms", after_ms(&l).unwrap_or(f64::NAN)))
        );
    }

    // -----------------------------------------------------------------------------------
    // b. Both phones behind NAT: relayed, then direct
    // -----------------------------------------------------------------------------------

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn phones_behind_carrier_and_home_nat_connect_relayed_then_go_direct() {
        let w = World::start(port_preserving(), NAMES_PORT);
        // Phone A on cellular only (carrier-grade NAT, two port-preserving steps), phone B
        // on its home Wi-Fi (and cellular as a standby).
        w.lab.del_addr(Phone::A, Access::Wifi).unwrap();
        let relay = w.relay(0, RELAY_PORT);
        let mut listener = w.listen(w.lab.phone(Phone::A), "b-cgnat.lab", &[&relay], &["--deadline", DEADLINE], payload(BIG, 3), Feed::bulk());
        let mut client =
            w.connect(w.lab.phone(Phone::B), "b-cgnat.lab", &["--deadline", DEADLINE], payload(BIG, 4), Feed::held_at(BIG / 2));
        let direct = wait_log(&client, WENT_DIRECT, TO_DIRECT)
            .unwrap_or_else(|| panic!("the flow did not go direct within {TO_DIRECT:?} (both NATs port-preserving)\n{}", w.logs(&[&listener, &client])));
        println!("{} {}", w.t(), direct.trim());
        client.feeder.release();
        finish(&w, "cgnat/home", &mut listener, &mut client, TRANSFER);
        assert_started_relayed(&w, &listener, &client, &relay);
        let cell_public = w.lab.public_addr(Phone::A, Access::Cell).unwrap().to_string();
        let subs = client.subflows();
        assert!(
            subs.iter().any(|(local, remote, relayed)| !relayed && local.starts_with("192.168.2.2:") && remote.starts_with(&format!("{cell_public}:"))),
            "no direct subflow from phone B's Wi-Fi to phone A's carrier address {cell_public}: {subs:?}\n{}",
            w.logs(&[&listener, &client])
        );
        println!("{} went direct after {:.0} ms; SHA-256 matches both ways", w.t(), after_ms(&direct).unwrap_or(f64::NAN));
    }

    // -----------------------------------------------------------------------------------
    // c. The NAT matrix
    // -----------------------------------------------------------------------------------

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn nat_matrix_only_port_preserving_on_both_sides_goes_direct() {
        // Each phone: Wi-Fi behind a port-preserving home NAT, cellular behind symmetric
        // NATs (both steps). `--bind` puts each end of a case on the network it tests.
        let sym = PhoneNet { cell_nat: Nat::Symmetric, carrier_nat: Nat::Symmetric, ..PhoneNet::all(Nat::PortPreserving) };
        let w = World::start(config(sym.clone(), sym), NAMES_PORT);
        let relay = w.relay(0, RELAY_PORT);
        let on = |phone, nat: Nat| {
            let access = if nat == Nat::PortPreserving { Access::Wifi } else { Access::Cell };
            w.lab.phone_addr(phone, access).unwrap().to_string()
        };
        const BACK: usize = 8 * MB;
        let cases = [(Nat::PortPreserving, Nat::PortPreserving), (Nat::PortPreserving, Nat::Symmetric), (Nat::Symmetric, Nat::PortPreserving), (Nat::Symmetric, Nat::Symmetric)];
        let mut flows = Vec::new();
        for (i, (ln, cn)) in cases.iter().enumerate() {
            let name = format!("m-{ln}-{cn}.lab");
            let (lbind, cbind) = (on(Phone::A, *ln), on(Phone::B, *cn));
            let listener = w.listen(w.lab.phone(Phone::A), &name, &[&relay], &["--bind", &lbind, "--deadline", "90"], payload(BIG, 10 + i as u64), Feed::bulk());
            let client = w.connect(w.lab.phone(Phone::B), &name, &["--bind", &cbind, "--deadline", "90"], payload(BACK, 20 + i as u64), Feed::held_at(BACK / 2));
            flows.push((format!("{ln}/{cn}"), *ln == Nat::PortPreserving && *cn == Nat::PortPreserving, listener, client));
        }
        let started = Instant::now();
        let ctx_all = |flows: &[(String, bool, End, End)]| {
            let ends: Vec<&End> = flows.iter().flat_map(|(_, _, l, c)| [l, c]).collect();
            w.logs(&ends)
        };
        // Wait for every case's outcome (at most TO_GIVE_UP), releasing each client's
        // second half once its case has decided.
        let mut outcomes: Vec<Option<(&'static str, String, Duration)>> = vec![None; flows.len()];
        while outcomes.iter().any(Option::is_none) && started.elapsed() < TO_GIVE_UP {
            for (i, (label, _, _, client)) in flows.iter_mut().enumerate() {
                if outcomes[i].is_none() {
                    if let Some((which, line)) = wait_any(client, &[WENT_DIRECT, STAYS_RELAYED], Duration::ZERO) {
                        println!("{} [listener/client {label}] {}", w.t(), line.trim());
                        outcomes[i] = Some((which, line, started.elapsed()));
                        client.feeder.release();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50)); // polling four logs, bounded
        }
        let mut report = String::from("  listener/client                outcome\n");
        for (i, (label, _, listener, client)) in flows.iter_mut().enumerate() {
            client.feeder.release();
            let out = finish(&w, label, listener, client, TRANSFER);
            let attempts = client.log().matches("trying to go direct").count();
            let failed = client.log().matches("no direct path opened").count();
            let outcome = match &outcomes[i] {
                Some((WENT_DIRECT, line, _)) => format!("direct after {:.0} ms", after_ms(line).unwrap_or(f64::NAN)),
                Some((_, _, at)) => format!("stays relayed (said so {:.1} s after start, {attempts} attempts)", at.as_secs_f64()),
                None => format!("undecided after {TO_GIVE_UP:?}: {attempts} attempt(s) started, {failed} failed, no \"{STAYS_RELAYED}\""),
            };
            report.push_str(&format!("  {label:<30} {outcome}; {} + {} bytes, SHA-256 match\n", out.to_client.0, out.to_listener.0));
        }
        println!("{} NAT matrix:\n{report}", w.t());
        for (i, (label, should_punch, _, client)) in flows.iter().enumerate() {
            let direct_subflow = client.subflows().iter().any(|s| !s.2);
            match (&outcomes[i], *should_punch) {
                (Some((WENT_DIRECT, ..)), true) => assert!(direct_subflow, "[{label}] said it went direct, but no direct subflow came up"),
                (Some((STAYS_RELAYED, ..)), false) => assert!(!direct_subflow, "[{label}] stays relayed, yet a direct subflow came up"),
                (got, _) => panic!(
                    "[{label}] expected {}, got {:?}\nNAT matrix:\n{report}\n{}",
                    if *should_punch { "the flow to go direct" } else { "the flow to stay relayed, and its client to say so" },
                    got.as_ref().map(|o| o.1.trim()),
                    ctx_all(&flows)
                ),
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // d. UDP dropped everywhere
    // -----------------------------------------------------------------------------------

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn udp_is_dropped_everywhere_and_flows_need_none() {
        let w = World::start(port_preserving(), NAMES_PORT);
        let relay = w.relay(0, RELAY_PORT);
        // UDP from phone A to the relay's address and to the public host, both listening:
        // every datagram is dropped on the way (counted by the routers), none arrives.
        let public = msocket_lab::PUBLIC_HOST_ADDR;
        let receivers: Vec<(SocketAddr, std::net::UdpSocket)> = [(w.lab.services(), RELAY_ADDRS[0]), (w.lab.public_host(), public)]
            .into_iter()
            .map(|(ns, ip)| {
                let to = SocketAddr::from((ip, 9443));
                let sock = ns.spawn_runtime(move || async move { std::net::UdpSocket::bind(to) }).unwrap().join(READY).unwrap().unwrap();
                sock.set_nonblocking(true).unwrap();
                (to, sock)
            })
            .collect();
        let before = w.lab.udp_dropped().unwrap();
        let targets: Vec<SocketAddr> = receivers.iter().map(|(a, _)| *a).collect();
        w.lab
            .phone(Phone::A)
            .spawn_runtime(move || async move {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                for to in targets {
                    for _ in 0..3 {
                        s.send_to(b"udp probe", to).unwrap();
                    }
                }
            })
            .unwrap()
            .join(READY)
            .unwrap();
        let deadline = Instant::now() + READY;
        while w.lab.udp_dropped().unwrap() < before + 6 {
            assert!(Instant::now() < deadline, "the routers did not count 6 dropped datagrams");
            std::thread::sleep(Duration::from_millis(10)); // polling a counter, bounded
        }
        for (to, sock) in &receivers {
            let mut buf = [0u8; 64];
            let got = sock.recv_from(&mut buf);
            assert!(got.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "a UDP datagram reached {to}: {got:?}");
        }
        let dropped = w.lab.udp_dropped().unwrap();
        assert_eq!(dropped, before + 6, "more UDP dropped than the probes sent");
        println!("{} UDP: 6 probe datagrams dropped by the routers, none arrived", w.t());

        let mut listener = w.listen(w.lab.phone(Phone::A), "d-udp.lab", &[&relay], &["--deadline", DEADLINE], payload(BIG, 5), Feed::bulk());
        let mut client = w.connect(w.lab.phone(Phone::B), "d-udp.lab", &["--deadline", DEADLINE], payload(BIG, 6), Feed::bulk());
        let out = finish(&w, "udp", &mut listener, &mut client, TRANSFER);
        assert_started_relayed(&w, &listener, &client, &relay);
        assert_eq!(w.lab.udp_dropped().unwrap(), dropped, "msocket (or the daemons) sent UDP\n{}", w.logs(&[&listener, &client]));
        println!(
            "{} 20 MB each way in {:.2} s ({:.0} Mbit/s) without a single UDP datagram",
            w.t(),
            out.took.as_secs_f64(),
            mbit(out.to_client.0 + out.to_listener.0, out.took)
        );
    }

    // -----------------------------------------------------------------------------------
    // e. Only TCP 443 out of the phone's networks
    // -----------------------------------------------------------------------------------

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn only_tcp_443_out_of_the_phone_network_and_the_flow_works_through_a_relay_on_443() {
        let a = PhoneNet { only_tcp_443: true, ..PhoneNet::all(Nat::PortPreserving) };
        let w = World::start(config(a, PhoneNet::all(Nat::PortPreserving)), 443);
        let relay = w.relay(0, RELAY_PORT);
        // The filter works: a connection from phone A to another port is dropped (no
        // answer, counted), where an open network would have been refused at once.
        let before = w.lab.filtered(Phone::A).unwrap();
        let probe = SocketAddr::from((RELAY_ADDRS[1], 7451));
        let err = w
            .lab
            .phone(Phone::A)
            .spawn_runtime(move || async move { std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)).map(drop) })
            .unwrap()
            .join(READY)
            .unwrap()
            .expect_err("phone A reached port 7451 on a 443-only network");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(w.lab.filtered(Phone::A).unwrap() > before);
        println!("{} phone A's networks drop everything but TCP 443 ({err})", w.t());

        let mut listener = w.listen(w.lab.phone(Phone::A), "e-443.lab", &[&relay], &["--deadline", DEADLINE], payload(BIG, 7), Feed::bulk());
        let mut client = w.connect(w.lab.phone(Phone::B), "e-443.lab", &["--deadline", DEADLINE], payload(BIG, 8), Feed::bulk());
        let out = finish(&w, "443-only", &mut listener, &mut client, TRANSFER);
        assert_started_relayed(&w, &listener, &client, &relay);
        let subs = client.subflows();
        assert!(subs.iter().all(|s| s.2), "a direct subflow out of a 443-only network: {subs:?}\n{}", w.logs(&[&listener, &client]));
        println!(
            "{} 20 MB each way in {:.2} s through {relay}; {} packets filtered on phone A's networks",
            w.t(),
            out.took.as_secs_f64(),
            w.lab.filtered(Phone::A).unwrap()
        );
    }

    // -----------------------------------------------------------------------------------
    // f. A relay killed mid-transfer
    // -----------------------------------------------------------------------------------

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn a_relay_killed_mid_transfer_loses_nothing_and_the_flow_moves_to_the_other() {
        let w = World::start(port_preserving(), NAMES_PORT);
        let relays = [w.relay(0, RELAY_PORT), w.relay(1, RELAY_PORT)];
        // Relay-only: the flow cannot go direct, every byte passes a relay.
        let paced = Feed::paced(64 * 1024, Duration::from_millis(5));
        let mut listener =
            w.listen(w.lab.phone(Phone::A), "f-failover.lab", &[&relays[0], &relays[1]], &["--relay-only", "--deadline", DEADLINE], payload(BIG, 9), paced);
        let mut client = w.connect(w.lab.phone(Phone::B), "f-failover.lab", &["--deadline", DEADLINE], payload(BIG, 10), paced);
        assert!(client.sink.wait_bytes((BIG / 4) as u64, TRANSFER), "a quarter did not arrive: {}\n{}", client.sink.progress(), w.logs(&[&listener, &client]));
        let carrying = client.subflows().first().map(|s| s.1.clone()).unwrap_or_else(|| panic!("no subflow logged\n{}", w.logs(&[&listener, &client])));
        let other = relays.iter().find(|r| **r != carrying).unwrap_or_else(|| panic!("the flow runs through {carrying}, not a relay\n{}", w.logs(&[&listener, &client]))).clone();
        let killed = w.kill_relay(&carrying);
        println!("{} KILL: the relay carrying the flow ({carrying}) is killed (SIGKILL) after {} bytes arrived", w.t(), client.sink.bytes());
        let out = finish(&w, "relay killed", &mut listener, &mut client, TRANSFER);
        let moved = client.subflows().iter().any(|s| s.2 && s.1 == other);
        assert!(moved, "the flow did not move to {other}: {:?}\n{}", client.subflows(), w.logs(&[&listener, &client]));
        let (down, up) = (client.sink.longest_gap_after(killed), listener.sink.longest_gap_after(killed));
        println!(
            "{} failover to {other}: longest gap after the kill {} ms listener -> client, {} ms client -> listener; {} + {} bytes, SHA-256 match",
            w.t(),
            down.as_millis(),
            up.as_millis(),
            out.to_client.0,
            out.to_listener.0
        );
        assert!(down < Duration::from_secs(15) && up < Duration::from_secs(15), "failover took {down:?} / {up:?}");
    }

    // -----------------------------------------------------------------------------------
    // g. Both phones move at once
    // -----------------------------------------------------------------------------------

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn both_phones_lose_wifi_at_once_while_talking_through_a_relay() {
        let w = World::start(port_preserving(), NAMES_PORT);
        let relay = w.relay(0, RELAY_PORT);
        let paced = Feed::paced(64 * 1024, Duration::from_millis(5));
        let mut listener =
            w.listen(w.lab.phone(Phone::A), "g-both.lab", &[&relay], &["--relay-only", "--deadline", DEADLINE], payload(BIG, 11), paced);
        let mut client = w.connect(w.lab.phone(Phone::B), "g-both.lab", &["--deadline", DEADLINE], payload(BIG, 12), paced);
        let quarter = (BIG / 4) as u64;
        assert!(client.sink.wait_bytes(quarter, TRANSFER) && listener.sink.wait_bytes(quarter, TRANSFER), "a quarter did not arrive\n{}", w.logs(&[&listener, &client]));
        // Both at once: one thread per phone.
        let moved = std::thread::scope(|s| {
            let moves: Vec<_> = Phone::BOTH.iter().map(|p| s.spawn(|| w.lab.del_addr(*p, Access::Wifi))).collect();
            for m in moves {
                m.join().expect("move thread").expect("delete a Wi-Fi address");
            }
            Instant::now()
        });
        println!("{} MOVE: both phones lose their Wi-Fi address at once (cellular stays)", w.t());
        let out = finish(&w, "both move", &mut listener, &mut client, TRANSFER);
        for (end, gone) in [(&listener, "192.168.1.2"), (&client, "192.168.2.2")] {
            assert!(
                end.log().lines().any(|l| l.contains("network change applied") && l.contains(&format!("removed=[{gone}]"))),
                "{} did not follow its move\n{}",
                end.proc.what(),
                w.logs(&[&listener, &client])
            );
        }
        let subs = client.subflows();
        assert!(subs.iter().all(|s| s.2) && subs.iter().any(|s| s.0.starts_with("10.64.2.2:")), "not relayed over cellular: {subs:?}\n{}", w.logs(&[&listener, &client]));
        println!(
            "{} both moved: longest gap after the move {} ms listener -> client, {} ms client -> listener; {} + {} bytes, SHA-256 match",
            w.t(),
            client.sink.longest_gap_after(moved).as_millis(),
            listener.sink.longest_gap_after(moved).as_millis(),
            out.to_client.0,
            out.to_listener.0
        );
    }

    // -----------------------------------------------------------------------------------
    // h. The relay sees ciphertext only
    // -----------------------------------------------------------------------------------

    const MARKER: &[u8] = b"MSOCKET-PLAINTEXT-MARKER-the-relay-must-never-see-this";

    /// `len` bytes: the marker every 1000 bytes, test data between.
    fn marked(len: usize, seed: u64) -> Arc<Vec<u8>> {
        let mut bytes = data(len, seed);
        for at in (0..len.saturating_sub(MARKER.len())).step_by(1000) {
            bytes[at..at + MARKER.len()].copy_from_slice(MARKER);
        }
        Arc::new(bytes)
    }

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn the_relay_never_sees_plaintext() {
        let w = World::start(port_preserving(), NAMES_PORT);
        let relay = w.relay(0, RELAY_PORT);
        let capture = Capture::start(w.lab.services(), "eth0", RELAY_ADDRS[0], Some(RELAY_PORT), MARKER).expect("capture on the services host");
        // The capture would see plaintext: a plain TCP connection carries the marker to
        // the relay (which refuses it), and is found.
        let to = SocketAddr::from((RELAY_ADDRS[0], RELAY_PORT));
        w.lab
            .public_host()
            .spawn_runtime(move || async move {
                use std::io::Write as _;
                let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect to the relay");
                let _ = s.write_all(MARKER);
            })
            .unwrap()
            .join(READY)
            .unwrap();
        let deadline = Instant::now() + READY;
        while capture.stats().needle_hits == 0 {
            assert!(Instant::now() < deadline, "the capture did not see a marker sent in plaintext: {:?}", capture.stats());
            std::thread::sleep(Duration::from_millis(10)); // polling a counter, bounded
        }
        let control = capture.stats();
        println!("{} the capture sees plaintext: {control:?}", w.t());

        let (down, up) = (marked(BIG, 13), marked(BIG, 14));
        let markers = down.windows(MARKER.len()).filter(|w| *w == MARKER).count() * 2;
        // Paced (about 12 MB/s each way), so that the capture keeps up on a loaded machine.
        let paced = Feed::paced(128 * 1024, Duration::from_millis(10));
        let mut listener = w.listen(w.lab.phone(Phone::A), "h-secret.lab", &[&relay], &["--relay-only", "--deadline", DEADLINE], down, paced);
        let mut client = w.connect(w.lab.phone(Phone::B), "h-secret.lab", &["--deadline", DEADLINE], up, paced);
        let out = finish(&w, "plaintext", &mut listener, &mut client, TRANSFER);
        assert_started_relayed(&w, &listener, &client, &relay);
        let seen = capture.stop();
        println!("{} {markers} markers sent through the relay; captured at the relay: {seen:?}", w.t());
        assert_eq!(seen.kernel_drops, 0, "the capture dropped frames: it proves less than it should");
        assert_eq!(seen.needle_hits, control.needle_hits, "the relay's traffic carried the marker in plaintext (first at {:?})", seen.first_hit);
        // Every byte crossed the relay twice (in from one end, out to the other), sealed.
        let carried = out.to_client.0 + out.to_listener.0;
        assert!(
            seen.tcp_payload_bytes - control.tcp_payload_bytes >= 2 * carried,
            "only {} bytes of TCP payload crossed the relay's interface for {carried} bytes carried",
            seen.tcp_payload_bytes - control.tcp_payload_bytes
        );
    }

    // -----------------------------------------------------------------------------------
    // The benchmark's lab figures
    // -----------------------------------------------------------------------------------

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh)"]
    fn the_benchmark_measures_the_lab() {
        ready();
        let _serial = serial();
        let started = Instant::now();
        let f = msocket_bench::relay_lab::run_relay_lab(BIG as u64).unwrap_or_else(|e| panic!("the relay lab benchmark failed: {e}"));
        println!("relay lab figures in {:.1} s: {f:#?}", started.elapsed().as_secs_f64());
        assert!(f.direct_mbps > 0.0 && f.relayed_mbps > 0.0, "{f:?}");
        assert!(f.failover_ms.is_some(), "the flow never resumed after its relay died: {f:?}");
        assert_eq!(f.holepunch.len(), 4, "{f:?}");
        for case in &f.holepunch {
            assert!(case.sha_ok, "data differed after punching: {case:?}");
            let both_preserve = case.listener == "port-preserving" && case.client == "port-preserving";
            assert_eq!(case.direct, both_preserve, "{case:?}");
            assert_eq!(case.time_to_direct_ms.is_some(), case.direct, "{case:?}");
        }
    }
}
