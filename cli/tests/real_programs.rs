//! Real programs over the real `msocket` and `msocketd` binaries, in the network lab,
//! driven exactly as a user would drive them — and the phone moves while they run.
//!
//! Every test builds its own lab (`msocket_lab::PhoneLab`: a phone with Wi-Fi "20mbit
//! 20ms" and cellular "20mbit 40ms", both behind NAT, a core router, a server), starts
//! `msocketd name` in `core`, and runs the programs in the namespaces with `ip netns
//! exec`:
//!
//! - netcat: `msocket listen NAME < file` on the server, `msocket connect NAME` on the
//!   phone, its stdout hashed (`| sha256sum`); the phone loses its Wi-Fi address, or the
//!   server is renumbered, mid-transfer.
//! - OpenSSH: `sshd -D -e -f CONFIG` behind `msocket listen NAME --to`, `ssh -o
//!   ProxyCommand='msocket connect %h …' root@NAME` on the phone: a file copied across the
//!   loss of Wi-Fi, and 40 lines echoed one at a time by a remote `cat` while Wi-Fi goes,
//!   comes back with a new address, and its NAT rebinds; and sessions across a silent
//!   Wi-Fi blackhole, both ends moving at once, break-before-make onto a new cellular
//!   address, a carrier NAT rebinding, and a carrier NAT appearing on cellular.
//! - nginx + curl: nginx behind `listen --to`, `msocket forward` on the phone, curl
//!   downloads 20 MB across the loss of Wi-Fi; then, right after three more moves (a new
//!   Wi-Fi address, the Wi-Fi NAT rebinding, the server renumbered), 100 requests 8 at a
//!   time.
//! - iperf3 through `forward` while Wi-Fi flaps every 500 ms, next to plain TCP over
//!   cellular alone (throughput reported, not compared).
//!
//! The CLI runs with `RUST_LOG=info` and `--deadline 20` (a flow that has no path for 20 s
//! fails with msocket's own message instead of hanging); failure messages carry every
//! program's log (`MSOCKET_REAL_LOGS=1` prints them when a test passes too).
//! `MSOCKET_REAL_NO_MOVES=1` runs the same tests without their moves, to tell a program
//! problem from a mobility problem.
//!
//! Needs root, network namespaces and the programs (`lab/setup.sh` installs them; it is
//! run when something is missing), so the tests are ignored unless asked for
//! (`--include-ignored`); asked for where they cannot run, they fail saying why. The
//! tests run one at a time (a lock); the file takes about a minute when everything works,
//! under three minutes when moves are not followed (flows then wait out their 20 s
//! deadline).

#[cfg(target_os = "linux")]
mod real_programs_support;

#[cfg(target_os = "linux")]
mod tests {
    use std::fmt::Write as _;
    use std::fs::File;
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use msocket_lab::{Access, PhoneLab};

    use super::real_programs_support::*;

    /// The server's address after a renumbering.
    const RENUMBERED: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 20);
    /// How long a transfer may take end to end (a few seconds when it works).
    const TRANSFER: Duration = Duration::from_secs(45);
    /// The CLI's flow deadline: a flow without a path for this long fails, loudly.
    const DEADLINE: &str = "20";

    fn moves_enabled() -> bool {
        std::env::var_os("MSOCKET_REAL_NO_MOVES").is_none()
    }

    /// Performs a move (unless moves are disabled), printing it on the test's timeline;
    /// returns when it was made.
    fn make_move<T>(w: &World, what: &str, f: impl FnOnce(&PhoneLab) -> msocket_lab::Result<T>) -> Instant {
        if !moves_enabled() {
            println!("{} move skipped (MSOCKET_REAL_NO_MOVES): {what}", w.t());
            return Instant::now();
        }
        f(&w.lab).unwrap_or_else(|e| panic!("move {what}: {e}"));
        println!("{} MOVE: {what}", w.t());
        Instant::now()
    }

    fn wifi_gone(w: &World) -> Instant {
        make_move(w, "the phone's Wi-Fi address 192.168.1.2 is removed (cellular stays up)", |lab| lab.del_addr(Access::Wifi))
    }

    /// Prints the longest gap between reads after the move (reported, not asserted).
    fn print_stall(w: &World, what: &str, sink: &Sink, moved: Instant) {
        println!("{} {what}: longest gap between reads after the move {} ms", w.t(), sink.longest_gap_after(moved).as_millis());
    }

    // -----------------------------------------------------------------------------------
    // netcat
    // -----------------------------------------------------------------------------------

    #[derive(Clone, Copy, Debug)]
    enum NcMove {
        WifiGone,
        ServerRenumbered,
    }

    /// `msocket listen NAME < file` on the server, `msocket connect NAME | sha256sum` on
    /// the phone; `mv` happens once a quarter of the file has arrived.
    fn netcat(name: &str, mv: NcMove) {
        let w = World::start();
        const LEN: usize = 8 * MB;
        let file = w.path("file.bin");
        let expect = write_data_file(&file, LEN, 11);
        let input = File::open(&file).unwrap();
        let mut listen = w.listen(name, None, Stdio::from(input), &["--deadline", DEADLINE]);

        let key = w.keygen("phone");
        let mut cmd = w.msocket(w.lab.phone(), &["connect", name, "--deadline", DEADLINE], &key);
        cmd.stdout(Stdio::piped());
        let mut connect = Proc::spawn(&format!("msocket connect {name} (phone)"), cmd);
        let started = Instant::now();
        let sink = Sink::hash(connect.take_stdout());

        let quarter = (LEN / 4) as u64;
        assert!(
            sink.wait_bytes(quarter, TRANSFER),
            "no move yet, and a quarter of the file did not arrive: {}\n{}",
            sink.progress(),
            logs(&[&connect, &listen, w.names()])
        );
        println!("{} {} bytes arrived before the move", w.t(), sink.bytes());
        let moved = match mv {
            NcMove::WifiGone => wifi_gone(&w),
            NcMove::ServerRenumbered => make_move(&w, "the server is renumbered (172.16.100.10 -> 172.16.100.20)", |lab| lab.renumber_server(RENUMBERED)),
        };

        let end = sink.wait_end(TRANSFER);
        let connect_status = connect.finish(Duration::from_secs(10));
        let listen_status = listen.finish(Duration::from_secs(10));
        let diag = || format!("{}\n{}", sink.progress(), logs(&[&connect, &listen, w.names()]));
        let Some((n, hash)) = end else {
            panic!("[{mv:?}] connect's stdout did not end within {TRANSFER:?} of the move: {}", diag());
        };
        println!(
            "{} [{mv:?}] {n} bytes in {:.1} s, sha256 {}",
            w.t(),
            started.elapsed().as_secs_f64(),
            if hash == expect { "match" } else { "DIFFERS" }
        );
        print_stall(&w, "connect's stdout", &sink, moved);
        assert_eq!(n, LEN as u64, "[{mv:?}] length of what connect printed: {}", diag());
        assert!(hash == expect, "[{mv:?}] SHA-256 {} differs from the file's {}: {}", hex(&hash), hex(&expect), diag());
        assert!(connect_status.is_some_and(|s| s.success()), "[{mv:?}] connect exited with {connect_status:?}: {}", diag());
        assert!(listen_status.is_some_and(|s| s.success()), "[{mv:?}] listen exited with {listen_status:?}: {}", diag());
        if moves_enabled() {
            // The moving end followed its network by default (no flag asked for it).
            let (mover, gone) = match mv {
                NcMove::WifiGone => (&connect, "192.168.1.2"),
                NcMove::ServerRenumbered => (&listen, "172.16.100.10"),
            };
            assert_followed(mover, gone);
        }
    }

    /// `proc` (an msocket CLI) applied a network change that removed `gone`: it follows
    /// its network by itself.
    fn assert_followed(proc: &Proc, gone: &str) {
        let removed = format!("removed=[{gone}]");
        assert!(
            proc.log().lines().any(|l| l.contains("network change applied") && l.contains(&removed)),
            "{} did not follow the move ({removed} never applied):\n{}",
            proc.what(),
            proc.tail()
        );
    }

    #[test]
    #[ignore = "needs root, network namespaces and ssh/nginx/curl/iperf3 (lab/setup.sh)"]
    fn netcat_file_arrives_whole_when_the_phone_loses_wifi() {
        netcat("nc-wifi.lab", NcMove::WifiGone);
    }

    #[test]
    #[ignore = "needs root, network namespaces and ssh/nginx/curl/iperf3 (lab/setup.sh)"]
    fn netcat_file_arrives_whole_when_the_server_is_renumbered() {
        netcat("nc-renumber.lab", NcMove::ServerRenumbered);
    }

    // -----------------------------------------------------------------------------------
    // OpenSSH
    // -----------------------------------------------------------------------------------

    const SSH_PORT: u16 = 2222;

    /// sshd in the server namespace on 127.0.0.1:[`SSH_PORT`], in the foreground, with a
    /// generated config, host key and authorized key; behind `msocket listen NAME --to`.
    struct Ssh {
        name: String,
        client_key: std::path::PathBuf,
        phone_key: std::path::PathBuf,
        // Drop order: the listener goes before sshd.
        listen: Proc,
        sshd: Proc,
    }

    fn ssh_keygen(path: &Path) {
        let mut cmd = Command::new(program("ssh-keygen"));
        cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "msocket-test", "-f"]).arg(path);
        run_ok("ssh-keygen", cmd, READY);
    }

    fn start_ssh(w: &World, name: &str) -> Ssh {
        let dir = w.path("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        let (host_key, client_key) = (dir.join("host_key"), dir.join("id"));
        ssh_keygen(&host_key);
        ssh_keygen(&client_key);
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
        let config = dir.join("sshd_config");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{SSH_PORT}\n\
                 HostKey {d}/host_key\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 StrictModes no\n\
                 PrintMotd no\n\
                 LogLevel VERBOSE\n\
                 Subsystem sftp internal-sftp\n"
            ),
        )
        .unwrap();
        // sshd refuses to start without its privilege-separation directory, which Debian
        // creates only when the service starts (and the service is never started here).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut cmd = w.lab.server().command(program("sshd"));
        cmd.args(["-D", "-e", "-f"]).arg(&config).stdin(Stdio::null()).stdout(Stdio::null());
        let sshd = Proc::spawn("sshd (server)", cmd);
        sshd.wait_line(&format!("Server listening on 127.0.0.1 port {SSH_PORT}"), READY);
        println!("{} sshd ready on 127.0.0.1:{SSH_PORT}", w.t());
        let listen = w.listen(name, Some(SocketAddr::from(([127, 0, 0, 1], SSH_PORT))), Stdio::null(), &["--deadline", DEADLINE]);
        Ssh { name: name.to_string(), client_key, phone_key: w.keygen("phone-ssh"), listen, sshd }
    }

    impl Ssh {
        /// `ssh -o ProxyCommand='msocket connect %h …' … root@NAME REMOTE…` on the phone.
        fn command(&self, w: &World, remote: &[&str]) -> Command {
            let proxy = format!(
                "ProxyCommand={} connect %h --names {} --key {} --deadline {DEADLINE}",
                msocket_bin(),
                w.names_url,
                self.phone_key.display()
            );
            let mut cmd = w.lab.phone().command(program("ssh"));
            cmd.args(["-F", "/dev/null", "-T", "-o", &proxy])
                .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
                .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i"])
                .arg(&self.client_key)
                .arg(format!("root@{}", self.name))
                .args(remote);
            // For the ProxyCommand, which inherits ssh's environment and stderr.
            cmd.env("RUST_LOG", "info").env("NO_COLOR", "1").env_remove("MSOCKET_KEY").env_remove("MSOCKET_NAMES");
            cmd
        }
    }

    #[test]
    #[ignore = "needs root, network namespaces and ssh/nginx/curl/iperf3 (lab/setup.sh)"]
    fn ssh_copy_arrives_whole_when_the_phone_loses_wifi() {
        let w = World::start();
        let ssh = start_ssh(&w, "ssh-copy.lab");
        const LEN: usize = 6 * MB;
        let file = w.path("copy.bin");
        let expect = write_data_file(&file, LEN, 21);

        // It works at all: a command's output comes back.
        let (status, out, p) = run("ssh uname", ssh.command(&w, &["echo", "hello-from", "$(uname -s)"]), TRANSFER);
        assert!(
            status.success() && out.trim() == "hello-from Linux",
            "ssh through msocket: {status}, stdout {out:?}\n{}",
            logs(&[&p, &ssh.listen, &ssh.sshd])
        );
        println!("{} ssh works: {}", w.t(), out.trim());

        let mut cmd = ssh.command(&w, &["cat", &file.display().to_string()]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut copy = Proc::spawn("ssh cat (phone, with msocket connect as ProxyCommand)", cmd);
        let started = Instant::now();
        let sink = Sink::hash(copy.take_stdout());
        assert!(
            sink.wait_bytes((LEN / 4) as u64, TRANSFER),
            "no move yet, and a quarter of the file did not arrive: {}\n{}",
            sink.progress(),
            logs(&[&copy, &ssh.listen, &ssh.sshd])
        );
        println!("{} {} bytes arrived before the move", w.t(), sink.bytes());
        let moved = wifi_gone(&w);
        let end = sink.wait_end(TRANSFER);
        let status = copy.finish(Duration::from_secs(10));
        let diag = || format!("{}\n{}", sink.progress(), logs(&[&copy, &ssh.listen, &ssh.sshd, w.names()]));
        let Some((n, hash)) = end else {
            panic!("ssh's stdout did not end within {TRANSFER:?} of the move: {}", diag());
        };
        println!("{} ssh copy: {n} bytes in {:.1} s, sha256 {}", w.t(), started.elapsed().as_secs_f64(), if hash == expect { "match" } else { "DIFFERS" });
        print_stall(&w, "ssh's stdout", &sink, moved);
        assert_eq!(n, LEN as u64, "length of the copy: {}", diag());
        assert!(hash == expect, "SHA-256 of the copy differs: {}", diag());
        assert!(status.is_some_and(|s| s.success()), "ssh exited with {status:?}: {}", diag());
        if moves_enabled() {
            assert_followed(&copy, "192.168.1.2"); // the ProxyCommand logs on ssh's stderr
        }
    }

    /// A move made before line `at` of an interactive session: what it is, and how.
    type SessionMove = (usize, &'static str, fn(&PhoneLab) -> msocket_lab::Result<()>);

    /// An interactive-like ssh session over `msocket connect` as ProxyCommand: a remote
    /// `cat` is fed 40 lines, each of which must come back before the next is typed, with
    /// `moves` made on the way.
    fn ssh_session(name: &str, moves: &[SessionMove]) {
        ssh_session_in(World::start(), name, moves)
    }

    /// [`ssh_session`] in a lab of the caller's.
    fn ssh_session_in(w: World, name: &str, moves: &[SessionMove]) {
        let ssh = start_ssh(&w, name);
        let mut cmd = ssh.command(&w, &["cat"]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut session = Proc::spawn("ssh cat session (phone, with msocket connect as ProxyCommand)", cmd);
        let mut stdin = session.take_stdin();
        let stdout = session.take_stdout();
        let (tx, echoed) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let per_line = Duration::from_secs(30);
        let mut report = String::new();
        for i in 0..40 {
            for (_, what, mv) in moves.iter().filter(|(at, ..)| *at == i) {
                make_move(&w, what, mv);
            }
            // Interactive: each line must come back before the next one is typed.
            let line = format!("line {i:02} {}", "typed-".repeat(1 + i % 7));
            let sent = Instant::now();
            writeln!(stdin, "{line}").and_then(|()| stdin.flush()).unwrap_or_else(|e| {
                panic!("writing line {i} to ssh: {e}\n{}", logs(&[&session, &ssh.listen, &ssh.sshd]))
            });
            let got = echoed.recv_timeout(per_line).unwrap_or_else(|e| {
                panic!(
                    "line {i} did not come back within {per_line:?} ({e:?}); lines so far:\n{report}\n{}",
                    logs(&[&session, &ssh.listen, &ssh.sshd, w.names()])
                )
            });
            assert_eq!(got, line, "line {i} came back different\n{}", session.tail());
            let rtt = sent.elapsed();
            let _ = writeln!(report, "  line {i:02} back in {:>6.1} ms", rtt.as_secs_f64() * 1e3);
            if i % 10 == 0 || rtt > Duration::from_millis(500) {
                println!("{} line {i:02} back in {:.1} ms", w.t(), rtt.as_secs_f64() * 1e3);
            }
        }
        drop(stdin); // the user ends the session
        let status = session.finish(Duration::from_secs(15));
        assert!(
            status.is_some_and(|s| s.success()),
            "ssh exited with {status:?} after the session\n{}",
            logs(&[&session, &ssh.listen, &ssh.sshd])
        );
        assert!(echoed.recv_timeout(Duration::from_secs(5)).is_err(), "output after the last line");
        println!("{} all 40 lines came back; round trips:\n{report}", w.t());
    }

    #[test]
    #[ignore = "needs root, network namespaces and ssh/nginx/curl/iperf3 (lab/setup.sh)"]
    fn ssh_session_echoes_every_line_across_moves() {
        ssh_session(
            "ssh-live.lab",
            &[
                (10, "the phone's Wi-Fi address 192.168.1.2 is removed (cellular stays up)", |lab| {
                    lab.del_addr(Access::Wifi).map(drop)
                }),
                (20, "the phone gets a new Wi-Fi address (192.168.1.3)", |lab| {
                    lab.add_addr(Access::Wifi, World::new_wifi_addr(1))
                }),
                (30, "the Wi-Fi router's NAT rebinds (new public address, mappings forgotten)", |lab| {
                    lab.nat_rebind(Access::Wifi).map(drop)
                }),
            ],
        );
    }

    #[test]
    #[ignore = "needs root, network namespaces and ssh/nginx/curl/iperf3 (lab/setup.sh)"]
    fn ssh_session_survives_a_blackhole_both_moving_and_break_before_make() {
        ssh_session(
            "ssh-hard.lab",
            &[
                // Nothing tells the phone: Wi-Fi keeps its address and link, and carries nothing.
                (8, "Wi-Fi goes silently dead (every packet dropped, address and link kept)", |lab| {
                    lab.blackhole(msocket_lab::LinkId::Wifi, true)
                }),
                (16, "Wi-Fi carries packets again", |lab| lab.blackhole(msocket_lab::LinkId::Wifi, false)),
                (16, "both move at once: the phone's Wi-Fi address goes and the server is renumbered", |lab| {
                    lab.del_addr(Access::Wifi)?;
                    lab.renumber_server(RENUMBERED).map(drop)
                }),
                // Break before make: no path at all, then a new cellular address.
                (24, "the phone's cellular address goes too (no path left)", |lab| lab.del_addr(Access::Cell).map(drop)),
                (24, "cellular comes back with a new address (10.64.0.3)", |lab| {
                    lab.add_addr(Access::Cell, Ipv4Addr::new(10, 64, 0, 3))
                }),
                (32, "the carrier's NAT rebinds (new public address, mappings forgotten)", |lab| {
                    lab.nat_rebind(Access::Cell).map(drop)
                }),
            ],
        );
    }

    #[test]
    #[ignore = "needs root, network namespaces and ssh/nginx/curl/iperf3 (lab/setup.sh)"]
    fn ssh_session_survives_carrier_nat_appearing_on_cellular() {
        // Cellular starts without NAT (the core routes to the phone's cellular subnet).
        let world = World::start_with(|lab| lab.nat_cell = false);
        ssh_session_in(
            world,
            "ssh-cgnat.lab",
            &[
                (10, "the phone's Wi-Fi address 192.168.1.2 is removed (the session rides cellular)", |lab| {
                    lab.del_addr(Access::Wifi).map(drop)
                }),
                (20, "the carrier puts cellular behind NAT (open connections translated from now on)", |lab| {
                    lab.nat_on(Access::Cell)
                }),
            ],
        );
    }

    // -----------------------------------------------------------------------------------
    // nginx + curl
    // -----------------------------------------------------------------------------------

    const WEB_PORT: u16 = 8080;
    const FORWARD_PORT: u16 = 8081;
    const SMALL: usize = 100;

    fn small_body(i: usize) -> Vec<u8> {
        data(500 + 37 * i, 1000 + i as u64)
    }

    /// nginx in the foreground (no daemon, no master process) serving DIR/www on
    /// 127.0.0.1:[`WEB_PORT`] in the server namespace, ready (a request answered).
    fn start_nginx(w: &World, big: usize) -> (Proc, [u8; 32]) {
        let root = w.path("nginx");
        let www = root.join("www");
        std::fs::create_dir_all(www.join("s")).unwrap();
        for t in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(root.join("tmp").join(t)).unwrap();
        }
        let expect = write_data_file(&www.join("big.bin"), big, 31);
        for i in 0..SMALL {
            std::fs::write(www.join("s").join(i.to_string()), small_body(i)).unwrap();
        }
        let r = root.display();
        let config = root.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {r}/nginx.pid;\n\
                 error_log stderr notice;\n\
                 events {{ worker_connections 512; }}\n\
                 http {{\n  access_log off;\n  default_type application/octet-stream;\n  sendfile on;\n\
                 client_body_temp_path {r}/tmp/body;\n  proxy_temp_path {r}/tmp/proxy;\n\
                 fastcgi_temp_path {r}/tmp/fastcgi;\n  uwsgi_temp_path {r}/tmp/uwsgi;\n  scgi_temp_path {r}/tmp/scgi;\n\
                 server {{\n    listen 127.0.0.1:{WEB_PORT};\n    root {r}/www;\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let mut cmd = w.lab.server().command(program("nginx"));
        cmd.arg("-p").arg(&root).arg("-c").arg(&config).args(["-e", "stderr"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let nginx = Proc::spawn("nginx (server)", cmd);
        w.wait_http(w.lab.server(), WEB_PORT, "/s/0", &nginx);
        println!("{} nginx ready on 127.0.0.1:{WEB_PORT}", w.t());
        (nginx, expect)
    }

    #[test]
    #[ignore = "needs root, network namespaces and ssh/nginx/curl/iperf3 (lab/setup.sh)"]
    fn nginx_download_and_requests_through_forward_across_moves() {
        let w = World::start();
        const BIG: usize = 20 * MB;
        let (nginx, expect) = start_nginx(&w, BIG);
        let listen = w.listen("web.lab", Some(SocketAddr::from(([127, 0, 0, 1], WEB_PORT))), Stdio::null(), &["--deadline", DEADLINE]);
        let forward = w.forward(FORWARD_PORT, "web.lab", &["--deadline", DEADLINE]);
        let base = format!("http://127.0.0.1:{FORWARD_PORT}");

        // 1. A download across the loss of Wi-Fi.
        let mut cmd = w.lab.phone().command(program("curl"));
        cmd.args(["-sS", "--fail", "--max-time", "60", &format!("{base}/big.bin")]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut curl = Proc::spawn("curl big.bin (phone)", cmd);
        let started = Instant::now();
        let sink = Sink::hash(curl.take_stdout());
        assert!(
            sink.wait_bytes((BIG / 4) as u64, TRANSFER),
            "no move yet, and a quarter of the download did not arrive: {}\n{}",
            sink.progress(),
            logs(&[&curl, &forward, &listen, &nginx])
        );
        println!("{} {} bytes arrived before the move", w.t(), sink.bytes());
        let moved = wifi_gone(&w);
        let end = sink.wait_end(TRANSFER);
        let status = curl.finish(Duration::from_secs(10));
        let diag = || format!("{}\n{}", sink.progress(), logs(&[&curl, &forward, &listen, &nginx, w.names()]));
        let Some((n, hash)) = end else {
            panic!("curl's download did not end within {TRANSFER:?} of the move: {}", diag());
        };
        println!("{} download: {n} bytes in {:.1} s, sha256 {}", w.t(), started.elapsed().as_secs_f64(), if hash == expect { "match" } else { "DIFFERS" });
        print_stall(&w, "curl's download", &sink, moved);
        assert!(status.is_some_and(|s| s.success()), "curl exited with {status:?}: {}", diag());
        assert_eq!(n, BIG as u64, "download length: {}", diag());
        assert!(hash == expect, "download SHA-256 differs: {}", diag());
        if moves_enabled() {
            assert_followed(&forward, "192.168.1.2");
        }

        // 2. Three more moves, then at once 100 short requests, 8 at a time, each on its
        //    own connection (so each rides a new flow).
        make_move(&w, "the phone gets a new Wi-Fi address (192.168.1.3)", |lab| lab.add_addr(Access::Wifi, World::new_wifi_addr(1)));
        make_move(&w, "the Wi-Fi router's NAT rebinds (new public address, mappings forgotten)", |lab| lab.nat_rebind(Access::Wifi));
        make_move(&w, "the server is renumbered (172.16.100.10 -> 172.16.100.20)", |lab| lab.renumber_server(RENUMBERED));
        let out_dir = w.path("responses");
        std::fs::create_dir_all(&out_dir).unwrap();
        let mut cmd = w.lab.phone().command(program("curl"));
        cmd.args(["-sS", "--parallel", "--parallel-immediate", "--parallel-max", "8", "--max-time", "20"])
            .args(["-H", "Connection: close", "-w", "%{http_code} %{url_effective}\\n", "--output-dir"])
            .arg(&out_dir);
        for i in 0..SMALL {
            cmd.args(["-o", &i.to_string(), &format!("{base}/s/{i}")]);
        }
        let started = Instant::now();
        // Bounded: when it works, this takes a few seconds; when every request waits for
        // its flow's connect timeout, the requests done by then tell the story.
        let limit = Duration::from_secs(60);
        let (status, stdout, curl) = run_for("curl --parallel (phone)", cmd, limit);
        let took = started.elapsed();
        let curl_ok = status.is_some_and(|s| s.success());
        let status = status.map_or_else(|| format!("still running after {limit:?}, killed"), |s| s.to_string());
        let codes: std::collections::HashMap<&str, &str> =
            stdout.lines().filter_map(|l| l.split_once(' ')).map(|(code, url)| (url, code)).collect();
        let mut ok = 0;
        let mut bad = Vec::new();
        for i in 0..SMALL {
            let code = codes.get(format!("{base}/s/{i}").as_str()).copied();
            let body = std::fs::read(out_dir.join(i.to_string())).unwrap_or_default();
            if code == Some("200") && body == small_body(i) {
                ok += 1;
            } else {
                bad.push(format!("{i}: code {code:?}, {} bytes", body.len()));
            }
        }
        println!("{} requests after three moves: {ok}/{SMALL} answered 200 with the right body in {:.1} s", w.t(), took.as_secs_f64());
        assert!(
            bad.is_empty() && curl_ok,
            "after three moves, {} of {SMALL} requests failed (curl {status}): {}\ncurl's -w lines:\n{stdout}\n{}",
            bad.len(),
            bad.join("; "),
            logs(&[&curl, &forward, &listen, &nginx, w.names()])
        );
    }

    // -----------------------------------------------------------------------------------
    // iperf3
    // -----------------------------------------------------------------------------------

    const IPERF_PORT: u16 = 5201;
    const IPERF_FORWARD_PORT: u16 = 5202;

    /// Seconds each iperf3 run lasts (the Wi-Fi link flaps all along the msocket run).
    const IPERF_SECS: &str = "20";

    /// Runs an iperf3 client (bounded), returns its JSON report's received rate in Mbit/s.
    fn iperf3_client(w: &World, what: &str, args: &[&str], others: &[&Proc]) -> f64 {
        let mut cmd = w.lab.phone().command(program("iperf3"));
        cmd.args(["-J", "-t", IPERF_SECS, "--connect-timeout", "10000"]).args(args);
        let (status, stdout, p) = run(what, cmd, Duration::from_secs(60));
        let diag = || format!("{what}: exit {status}; stdout:\n{stdout}\n{}\n{}", p.tail(), logs(others));
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", diag()));
        assert!(json.get("error").is_none() && status.success(), "iperf3 failed: {}", diag());
        let bps = json["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or_else(|| panic!("no end.sum_received.bits_per_second: {}", diag()));
        bps / 1e6
    }

    #[test]
    #[ignore = "needs root, network namespaces and ssh/nginx/curl/iperf3 (lab/setup.sh)"]
    fn iperf3_through_forward_while_wifi_flaps() {
        let w = World::start();
        let mut cmd = w.lab.server().command(program("iperf3"));
        cmd.args(["-s", "-p", &IPERF_PORT.to_string(), "--forceflush"]).stdin(Stdio::null());
        let server = Proc::spawn_both("iperf3 -s (server)", cmd);
        server.wait_line(&format!("Server listening on {IPERF_PORT}"), READY);
        let listen = w.listen("perf.lab", Some(SocketAddr::from(([127, 0, 0, 1], IPERF_PORT))), Stdio::null(), &["--deadline", DEADLINE]);
        let forward = w.forward(IPERF_FORWARD_PORT, "perf.lab", &["--deadline", DEADLINE]);

        // msocket, while the Wi-Fi link goes down and up every 500 ms.
        let stop = AtomicBool::new(false);
        let msocket_mbit = std::thread::scope(|s| {
            let flapper = moves_enabled().then(|| {
                println!("{} MOVES: the Wi-Fi link flaps every 500 ms (cellular stays up)", w.t());
                s.spawn(|| w.lab.flap(Access::Wifi, Duration::from_millis(500), &stop))
            });
            let port = IPERF_FORWARD_PORT.to_string();
            let mbit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                iperf3_client(&w, "iperf3 -c through msocket forward (phone)", &["-c", "127.0.0.1", "-p", &port], &[&forward, &listen, &server])
            }));
            stop.store(true, Ordering::SeqCst);
            if let Some(f) = flapper {
                let downs = f.join().expect("flapper thread").expect("flap the Wi-Fi link");
                println!("{} the Wi-Fi link went down {downs} times", w.t());
            }
            mbit.unwrap_or_else(|p| std::panic::resume_unwind(p))
        });

        // Plain TCP over cellular alone, for comparison (nothing moves). The iperf3 server
        // listens anew between tests: wait for that, or the client may meet a closed port.
        server.wait_line_where("\"Server listening\" (test #2)", READY, &logs(&[&forward, &listen]), |l| {
            l.contains(&format!("Server listening on {IPERF_PORT} (test #2)"))
        });
        let cell = w.lab.phone_addr(Access::Cell).unwrap().to_string();
        let server_addr = w.lab.server_addr().to_string();
        let tcp_mbit = iperf3_client(
            &w,
            "iperf3 -c over plain TCP from the cellular address (phone)",
            &["-c", &server_addr, "-p", &IPERF_PORT.to_string(), "-B", &cell],
            &[&server],
        );
        println!(
            "iperf3 flapping: msocket {msocket_mbit:.2} Mbit/s, tcp-cell {tcp_mbit:.2} Mbit/s, ratio {:.2}",
            msocket_mbit / tcp_mbit
        );
        assert!(msocket_mbit > 0.0, "msocket carried nothing while Wi-Fi flapped");
    }
}
