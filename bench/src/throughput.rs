//! `msocket bench throughput`: a flow against plain TCP and against TCP carrying the same
//! Noise cipher without msocket (a Noise IK handshake, then AES-256-GCM records of the same
//! size sealed in place with the same nonces), side by side in one run on loopback.
//! Bulk: one sender, one receiver, `bytes` bytes, timed until the receiver has them all;
//! repeated `trials` times with the systems interleaved, the median reported. Latency:
//! 64-byte request, 64-byte response, one at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use msocket::name::{MemoryNameService, NameService};
use msocket::{Endpoint, EndpointConfig, Identity};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::BenchError;

const RR_SIZE: usize = 64;
const WARMUP: usize = 200;
const CHUNK: usize = 256 * 1024;
const NOISE_PARAMS: &str = "Noise_IK_25519_AESGCM_SHA256";
const RECORD: usize = 65535 - 16;

/// One system's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub system: String,
    pub bytes: u64,
    /// Median over the trials.
    pub throughput_mbps: f64,
    /// Every trial, in the order run.
    pub throughput_mbps_trials: Vec<f64>,
    pub rr_latency_us_p50: f64,
    pub rr_latency_us_p99: f64,
    pub throughput_ratio_vs_tcp: f64,
    /// Each trial against plain TCP's trial of the same round (run moments apart): on a
    /// noisy machine their spread says how far one ratio can be trusted.
    pub throughput_ratio_vs_tcp_trials: Vec<f64>,
    pub rr_p50_ratio_vs_tcp: f64,
    pub rr_p99_ratio_vs_tcp: f64,
}

const SYSTEMS: [&str; 3] = ["tcp", "tcp+noise", "msocket"];

/// One bulk transfer of `bytes` over `system`; Mbit/s.
async fn bulk_of(system: &str, bytes: u64) -> Result<f64, BenchError> {
    match system {
        "tcp" => {
            let (a, b) = tcp_pair().await?;
            bulk(a, b, bytes).await
        }
        "tcp+noise" => {
            let (a, b) = tcp_pair().await?;
            noise_bulk(a, b, bytes).await
        }
        _ => {
            let (a, b, _endpoints) = flow_pair().await?;
            bulk(a, b, bytes).await
        }
    }
}

/// `n` request/response round trips over `system`.
async fn latency_of(system: &str, n: usize) -> Result<Vec<Duration>, BenchError> {
    match system {
        "tcp" => {
            let (a, b) = tcp_pair().await?;
            request_response(a, b, n).await
        }
        "tcp+noise" => {
            let (a, b) = tcp_pair().await?;
            noise_request_response(a, b, n).await
        }
        _ => {
            let (a, b, _endpoints) = flow_pair().await?;
            request_response(a, b, n).await
        }
    }
}

/// Runs the three systems and prints their rows. Bulk transfers run `trials` times, the
/// systems interleaved, and each row reports the median, so that one unlucky scheduling
/// of a run on a shared machine does not decide a ratio.
pub async fn run(bytes: u64, round_trips: usize, trials: usize, json: bool) -> Result<(), BenchError> {
    if bytes == 0 || round_trips == 0 || trials == 0 {
        return Err(BenchError("--bytes, --round-trips and --trials must be above 0".into()));
    }
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); SYSTEMS.len()];
    for trial in 1..=trials {
        for (i, system) in SYSTEMS.iter().enumerate() {
            eprintln!("trial {trial}/{trials}: bulk over {system} ...");
            runs[i].push(bulk_of(system, bytes).await?);
        }
    }
    let mut rows = Vec::new();
    for (i, system) in SYSTEMS.iter().enumerate() {
        eprintln!("request/response over {system} ...");
        let lat = latency_of(system, round_trips).await?;
        let mut sorted = runs[i].clone();
        sorted.sort_by(f64::total_cmp);
        rows.push(Row {
            system: system.to_string(),
            bytes,
            throughput_mbps: sorted[sorted.len() / 2],
            throughput_mbps_trials: runs[i].clone(),
            rr_latency_us_p50: percentile(&lat, 0.50),
            rr_latency_us_p99: percentile(&lat, 0.99),
            throughput_ratio_vs_tcp: 0.0,
            throughput_ratio_vs_tcp_trials: Vec::new(),
            rr_p50_ratio_vs_tcp: 0.0,
            rr_p99_ratio_vs_tcp: 0.0,
        });
    }
    let base = rows[0].clone();
    for r in &mut rows {
        r.throughput_ratio_vs_tcp = r.throughput_mbps / base.throughput_mbps;
        r.throughput_ratio_vs_tcp_trials =
            r.throughput_mbps_trials.iter().zip(&base.throughput_mbps_trials).map(|(t, b)| t / b).collect();
        r.rr_p50_ratio_vs_tcp = r.rr_latency_us_p50 / base.rr_latency_us_p50;
        r.rr_p99_ratio_vs_tcp = r.rr_latency_us_p99 / base.rr_latency_us_p99;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<10} {:>12} {:>10} {:>10} {:>9} {:>9}", "system", "Mbit/s", "rr p50 us", "rr p99 us", "tput x", "p50 x");
        for r in &rows {
            println!(
                "{:<10} {:>12.0} {:>10.1} {:>10.1} {:>9.2} {:>9.2}",
                r.system, r.throughput_mbps, r.rr_latency_us_p50, r.rr_latency_us_p99, r.throughput_ratio_vs_tcp, r.rr_p50_ratio_vs_tcp
            );
        }
    }
    Ok(())
}

fn percentile(samples: &[Duration], q: f64) -> f64 {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let i = ((us.len() as f64 - 1.0) * q).round() as usize;
    us.get(i).copied().unwrap_or(0.0)
}

async fn tcp_pair() -> Result<(TcpStream, TcpStream), BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let (a, b) = tokio::join!(TcpStream::connect(listener.local_addr()?), listener.accept());
    let (a, (b, _)) = (a?, b?);
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    Ok((a, b))
}

/// Two flows' ends on loopback, with an in-process name service.
async fn flow_pair() -> Result<(msocket::Flow, msocket::Flow, (Endpoint, Endpoint)), BenchError> {
    let names: Arc<dyn NameService> = Arc::new(MemoryNameService::new());
    let mut config = EndpointConfig::new(names);
    config.local_ips = vec!["127.0.0.1".parse()?];
    let server = Endpoint::new(Identity::generate()?, config.clone());
    let client = Endpoint::new(Identity::generate()?, config);
    let mut listener = server.listen("bench.server").await?;
    let (a, b) = tokio::join!(client.connect("bench.server"), listener.accept());
    Ok((a?, b?, (server, client)))
}

/// Sends `bytes` from `a` to `b`; Mbit/s until `b` has read them all.
async fn bulk<A, B>(mut a: A, mut b: B, bytes: u64) -> Result<f64, BenchError>
where
    A: AsyncWrite + Unpin + Send + 'static,
    B: AsyncRead + Unpin + Send + 'static,
{
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < bytes {
            let n = b.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "stream ended early"));
            }
            got += n as u64;
        }
        Ok::<_, std::io::Error>(Instant::now())
    });
    let buf = vec![0x5Au8; CHUNK];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        a.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    let end = reader.await??;
    Ok(bytes as f64 * 8.0 / (end - start).as_secs_f64() / 1e6)
}

async fn request_response<A, B>(mut a: A, mut b: B, n: usize) -> Result<Vec<Duration>, BenchError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; RR_SIZE];
        for _ in 0..n + WARMUP {
            b.read_exact(&mut buf).await?;
            b.write_all(&buf).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut samples = Vec::with_capacity(n);
    let mut buf = [7u8; RR_SIZE];
    for i in 0..n + WARMUP {
        let t = Instant::now();
        a.write_all(&buf).await?;
        a.read_exact(&mut buf).await?;
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    echo.await??;
    Ok(samples)
}

/// One direction's key after a Noise handshake, used the way msocket uses it: records
/// sealed and opened in place with the packet number as the nonce.
struct RecordKey(ring::aead::LessSafeKey);

impl RecordKey {
    fn new(raw: &[u8; 32]) -> RecordKey {
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, raw).expect("32-byte key");
        RecordKey(ring::aead::LessSafeKey::new(key))
    }

    fn nonce(pn: u64) -> ring::aead::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&pn.to_be_bytes());
        ring::aead::Nonce::assume_unique_for_key(n)
    }

    /// Appends the sealed record of `plain` to `out`.
    fn seal(&self, pn: u64, plain: &[u8], out: &mut Vec<u8>) -> Result<(), BenchError> {
        out.extend_from_slice(&((plain.len() + 16) as u16).to_be_bytes());
        out.extend_from_slice(&pn.to_be_bytes());
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .0
            .seal_in_place_separate_tag(Self::nonce(pn), ring::aead::Aad::empty(), &mut out[start..])
            .map_err(|_| BenchError("seal failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Reads one record and opens it in place; returns its plaintext length.
    async fn open_next(&self, r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> Result<usize, BenchError> {
        let mut hdr = [0u8; 10];
        r.read_exact(&mut hdr).await?;
        let len = u16::from_be_bytes([hdr[0], hdr[1]]) as usize;
        let pn = u64::from_be_bytes(hdr[2..].try_into().expect("8 bytes"));
        r.read_exact(&mut buf[..len]).await?;
        let plain = self
            .0
            .open_in_place(Self::nonce(pn), ring::aead::Aad::empty(), &mut buf[..len])
            .map_err(|_| BenchError("record failed authentication".into()))?;
        Ok(plain.len())
    }
}

/// The two directions' keys of a completed Noise IK handshake: (client → server, server → client).
fn noise_keys() -> Result<(RecordKey, RecordKey), BenchError> {
    let params: snow::params::NoiseParams = NOISE_PARAMS.parse()?;
    let server_keys = snow::Builder::new(params.clone()).generate_keypair()?;
    let client_keys = snow::Builder::new(params.clone()).generate_keypair()?;
    let mut init = snow::Builder::new(params.clone())
        .local_private_key(&client_keys.private)?
        .remote_public_key(&server_keys.public)?
        .build_initiator()?;
    let mut resp = snow::Builder::new(params).local_private_key(&server_keys.private)?.build_responder()?;
    let (mut m, mut p) = (vec![0u8; 1024], vec![0u8; 1024]);
    let n = init.write_message(&[], &mut m)?;
    resp.read_message(&m[..n], &mut p)?;
    let n = resp.write_message(&[], &mut m)?;
    init.read_message(&m[..n], &mut p)?;
    let (up, down) = init.dangerously_get_raw_split();
    Ok((RecordKey::new(&up), RecordKey::new(&down)))
}

async fn noise_bulk(mut a: TcpStream, b: TcpStream, bytes: u64) -> Result<f64, BenchError> {
    let (up, _) = noise_keys()?;
    let up = Arc::new(up);
    let opener = up.clone();
    let reader = tokio::spawn(async move {
        let mut b = tokio::io::BufReader::with_capacity(CHUNK, b);
        let mut buf = vec![0u8; 65536];
        let mut got = 0u64;
        while got < bytes {
            got += opener.open_next(&mut b, &mut buf).await? as u64;
        }
        Ok::<_, BenchError>(Instant::now())
    });
    let data = vec![0x5Au8; RECORD];
    let mut out = Vec::with_capacity(4 * (RECORD + 32));
    let start = Instant::now();
    let (mut left, mut pn) = (bytes, 0u64);
    while left > 0 {
        out.clear();
        for _ in 0..4 {
            if left == 0 {
                break;
            }
            let n = left.min(RECORD as u64) as usize;
            up.seal(pn, &data[..n], &mut out)?;
            pn += 1;
            left -= n as u64;
        }
        a.write_all(&out).await?;
    }
    let end = reader.await.map_err(|e| BenchError(e.to_string()))??;
    Ok(bytes as f64 * 8.0 / (end - start).as_secs_f64() / 1e6)
}

async fn noise_request_response(mut a: TcpStream, mut b: TcpStream, n: usize) -> Result<Vec<Duration>, BenchError> {
    let (up, down) = noise_keys()?;
    let (up, down) = (Arc::new(up), Arc::new(down));
    let (up2, down2) = (up.clone(), down.clone());
    let echo = tokio::spawn(async move {
        let (mut buf, mut out) = (vec![0u8; 1024], Vec::new());
        for pn in 0..(n + WARMUP) as u64 {
            let len = up2.open_next(&mut b, &mut buf).await?;
            out.clear();
            down2.seal(pn, &buf[..len], &mut out)?;
            b.write_all(&out).await?;
        }
        Ok::<_, BenchError>(())
    });
    let (mut buf, mut out) = (vec![0u8; 1024], Vec::new());
    let mut samples = Vec::with_capacity(n);
    let msg = [7u8; RR_SIZE];
    for pn in 0..(n + WARMUP) as u64 {
        let t = Instant::now();
        out.clear();
        up.seal(pn, &msg, &mut out)?;
        a.write_all(&out).await?;
        down.open_next(&mut a, &mut buf).await?;
        if pn as usize >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    echo.await.map_err(|e| BenchError(e.to_string()))??;
    Ok(samples)
}
