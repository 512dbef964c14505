//! The sample apps as users run them (`sample-apps/run chat|stream`, the Kotlin console
//! versions on the JVM, over the same Kotlin API and bindings as the Android library), in
//! the two-phone lab (`msocket_lab::TwoPhoneLab`): each phone has Wi-Fi behind a home NAT
//! and cellular behind a carrier-grade NAT, a public core holds the real `msocketd name`
//! and `msocketd relay`, and the public host stands for a TV or a server.
//!
//! - Chat: alice on phone A and bob on phone B, reachable only through the relay at first
//!   (then directly, once hole punching succeeds), type a scripted conversation of 300
//!   messages while both phones move to new Wi-Fi addresses, bob's app is killed and
//!   started again, phone A's Wi-Fi is down for 30 s, and phone B loses every network for
//!   a few seconds. Every message each side printed as `sent` is printed as `received` by
//!   the other exactly once, in order, with its text, and as `delivered` by its sender; the
//!   history files on both sides hold the same two conversations; the path, move and
//!   resume lines appear.
//! - Streaming: phone A streams to a player on the public host while its Wi-Fi goes down
//!   for 8 s mid-stream, under `backup`, `energy` and `performance`: the player's summary
//!   says no chunk was corrupt or missing and no stall outlasted its buffer; the energy the
//!   sender estimates under `energy` is below that under `performance`. Over a Wi-Fi link
//!   slower than the stream, a stream started under `backup` (Wi-Fi, cellular only while
//!   Wi-Fi stalls) and switched to `performance` by the player shows cellular idle most
//!   seconds before the switch and busy every second after it.
//!
//! Needs root and network namespaces (ignored unless asked for; asked for where they
//! cannot run, they fail saying why) and the samples' build (`sample-apps/run build`,
//! which the tests run first: a JDK, kotlinc and two Maven artifacts the first time).
//! One test at a time (the lab's lock); about three minutes for the file.

#[cfg(target_os = "linux")]
mod real_programs_support;

#[cfg(target_os = "linux")]
#[allow(unused_imports)]
mod lab_relay_support;

#[cfg(target_os = "linux")]
mod lab_samples_support;

#[cfg(target_os = "linux")]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use msocket_lab::{Access, Nat, Phone, PhoneNet, TwoPhoneConfig};

    use super::lab_relay_support::*;
    use super::lab_samples_support::*;

    const RELAY_PORT: u16 = 443;
    const START: Duration = Duration::from_secs(60);
    const DELIVERY: Duration = Duration::from_secs(90);

    /// Wi-Fi faster than cellular; NATs that keep ports, so hole punching can work.
    fn lab(wifi: &str, cell: &str) -> TwoPhoneConfig {
        let net = |n: PhoneNet| PhoneNet { wifi: wifi.parse().unwrap(), cell: cell.parse().unwrap(), ..n };
        TwoPhoneConfig {
            phones: [net(PhoneNet::all(Nat::PortPreserving)), net(PhoneNet::all(Nat::PortPreserving))],
            uplink: "5ms".parse().unwrap(),
            ..TwoPhoneConfig::default()
        }
    }

    // -----------------------------------------------------------------------------------
    // Chat
    // -----------------------------------------------------------------------------------

    /// A message as one side printed it: (contact, seq, text).
    type Said = (String, u64, String);

    /// `CONTACT #SEQ TEXT` of a sent/received line.
    fn said(rest: &str) -> Said {
        let mut f = rest.splitn(3, ' ');
        let contact = f.next().unwrap_or_default().to_string();
        let seq = f.next().and_then(|s| s.strip_prefix('#')).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no #SEQ in {rest:?}"));
        (contact, seq, f.next().unwrap_or_default().to_string())
    }

    /// Every `word` line of every run of one user, parsed.
    fn all_said(runs: &[&App], word: &str) -> Vec<Said> {
        runs.iter().flat_map(|r| r.lines(word)).map(|l| said(&l)).collect()
    }

    /// `out`/`in` records of a history file: (outgoing, seq, text), and the delivered mark.
    fn history(file: &Path) -> (Vec<(bool, u64, String)>, u64) {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let mut msgs = Vec::new();
        let mut delivered = 0;
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "out" | "in" => msgs.push((f[0] == "out", f[1].parse().unwrap(), unescape(f[3]))),
                "delivered" => delivered = f[1].parse().unwrap(),
                other => panic!("{}: unknown record {other:?}", file.display()),
            }
        }
        (msgs, delivered)
    }

    /// The samples' field escaping undone (`%XX` of UTF-8 bytes; `%` alone is empty).
    fn unescape(field: &str) -> String {
        if field == "%" {
            return String::new();
        }
        let b = field.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&field[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// Types messages `prefix-from`..=`prefix-to` to `to`, `pace` apart (load, so that the
    /// network's changes land mid-conversation), and waits until the app printed the last
    /// one as sent.
    fn converse(app: &mut App, to: &str, prefix: &str, from: u32, to_n: u32, pace: Duration, context: &str) {
        for i in from..=to_n {
            app.type_line(&format!("@{to} {prefix}-{i} {}", "x".repeat((i % 7) as usize * 9)));
            std::thread::sleep(pace); // pacing the script, not waiting for anything
        }
        let last = format!(" {prefix}-{to_n} ");
        app.wait_for(&format!("sent {prefix}-{to_n}"), START, context, |o| o.iter().any(|o| o.word == "sent" && format!("{} ", o.rest).contains(&last)));
    }

    fn chat(w: &World, phone: Phone, me: &str, dir: &Path, relay: &str, add: Option<&str>) -> App {
        let data = dir.to_str().unwrap();
        let mut args = vec!["chat", "--me", me, "--relay", relay, "--data", data, "--log", "info"];
        if let Some(a) = add {
            args.extend(["--add", a]);
        }
        let mut app = App::start(w, w.lab.phone(phone), &format!("chat {me} (phone {phone:?})"), &args);
        app.wait_line("ready", me, START, &w.daemon_logs());
        app
    }

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh) and the samples' JVM build"]
    fn chat_between_two_phones_behind_nat_survives_moves_a_restart_and_outages() {
        let w = World::start(lab("20mbit 10ms", "10mbit 30ms"), 7460);
        let relay = w.relay(0, RELAY_PORT);
        let (dir_a, dir_b) = (w.path("alice"), w.path("bob"));
        let mut bob = chat(&w, Phone::B, "bob.lab", &dir_b, &relay, None);
        let bob_id = bob.lines("ready")[0].split_whitespace().next().unwrap().to_string();
        let mut alice = chat(&w, Phone::A, "alice.lab", &dir_a, &relay, Some(&bob_id));
        let ctx = |w: &World| w.daemon_logs();
        let pace = Duration::from_millis(40);
        println!("{} both ready; bob is {bob_id}", w.t());

        // 1. First contact: through the relay, then directly once punching succeeds.
        converse(&mut alice, "bob.lab", "a", 1, 30, pace, &ctx(&w));
        bob.wait_line("contact", "alice.lab#", START, &ctx(&w));
        converse(&mut bob, "alice.lab", "b", 1, 30, pace, &ctx(&w));
        let online = alice.wait_line("online", "bob.lab", START, &ctx(&w));
        println!("{} alice: online {online}", w.t());
        assert!(online.contains("relayed"), "the first flow is not relayed: {online}");
        let direct = alice.wait_line("path+", "direct", Duration::from_secs(20), &ctx(&w));
        println!("{} alice: went direct: path+ {direct}", w.t());

        // 2. Both phones move to new Wi-Fi addresses at once, mid-conversation.
        std::thread::scope(|s| {
            for (p, host) in [(Phone::A, 20), (Phone::B, 30)] {
                let lab = &w.lab;
                s.spawn(move || {
                    let old = lab.del_addr(p, Access::Wifi).expect("delete Wi-Fi address");
                    let o = old.octets();
                    lab.add_addr(p, Access::Wifi, Ipv4Addr::new(o[0], o[1], o[2], host)).expect("new Wi-Fi address");
                });
            }
        });
        println!("{} MOVE: both phones renumbered their Wi-Fi", w.t());
        converse(&mut alice, "bob.lab", "a", 31, 60, pace, &ctx(&w));
        converse(&mut bob, "alice.lab", "b", 31, 60, pace, &ctx(&w));
        alice.wait_line("moved", "we are now at 192.168.1.20", START, &ctx(&w));
        bob.wait_line("moved", "we are now at 192.168.2.30", START, &ctx(&w));
        // Then bob alone: alice hears of it from him, over the flow.
        let old = w.lab.del_addr(Phone::B, Access::Wifi).expect("delete B's Wi-Fi address");
        w.lab.add_addr(Phone::B, Access::Wifi, Ipv4Addr::new(192, 168, 2, 31)).expect("B's new Wi-Fi address");
        println!("{} MOVE: phone B alone, {old} -> 192.168.2.31", w.t());
        converse(&mut alice, "bob.lab", "a", 61, 70, pace, &ctx(&w));
        converse(&mut bob, "alice.lab", "b", 61, 70, pace, &ctx(&w));
        alice.wait_line("moved", "peer now at", START, &ctx(&w));

        // 3. Bob's app is killed; alice goes on typing; bob starts again.
        bob.proc.kill();
        println!("{} KILL: bob's app", w.t());
        converse(&mut alice, "bob.lab", "a", 71, 110, pace, &ctx(&w));
        let bob_first = bob;
        let mut bob = chat(&w, Phone::B, "bob.lab", &dir_b, &relay, None);
        println!("{} bob's app started again", w.t());
        assert!(bob.lines("earlier").len() >= 100, "bob's history was not shown after the restart\n{}", bob.proc.tail());
        converse(&mut bob, "alice.lab", "b", 71, 110, pace, &ctx(&w));

        // 4. Alice's Wi-Fi is down for 30 s; cellular carries the conversation.
        w.lab.link_down(Phone::A, Access::Wifi).expect("Wi-Fi down");
        let down = Instant::now();
        println!("{} WIFI DOWN on phone A", w.t());
        let slow = Duration::from_millis(250);
        let logs = w.daemon_logs();
        std::thread::scope(|s| {
            s.spawn(|| converse(&mut alice, "bob.lab", "a", 111, 150, slow, &logs));
            converse(&mut bob, "alice.lab", "b", 111, 150, slow, &logs);
        });
        std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())); // the outage's length
        w.lab.link_up(Phone::A, Access::Wifi).expect("Wi-Fi up");
        println!("{} WIFI UP on phone A after {:?}", w.t(), down.elapsed());

        // 5. Phone B loses every network for a few seconds: the flow resumes.
        w.lab.link_down(Phone::B, Access::Wifi).expect("B Wi-Fi down");
        w.lab.link_down(Phone::B, Access::Cell).expect("B cell down");
        std::thread::sleep(Duration::from_secs(4)); // the outage's length
        w.lab.link_up(Phone::B, Access::Wifi).expect("B Wi-Fi up");
        w.lab.link_up(Phone::B, Access::Cell).expect("B cell up");
        println!("{} phone B back after a 4 s outage", w.t());
        converse(&mut alice, "bob.lab", "a", 151, 160, pace, &ctx(&w));
        converse(&mut bob, "alice.lab", "b", 151, 160, pace, &ctx(&w));

        // Everything each side sent is delivered.
        let bob_runs = [&bob_first, &bob];
        let sent_by_alice = all_said(&[&alice], "sent");
        let sent_by_bob = all_said(&bob_runs, "sent");
        alice.wait_for("every message delivered", DELIVERY, &bob.proc.tail(), |o| o.iter().filter(|o| o.word == "delivered").count() >= sent_by_alice.len());
        let bob_delivered = |runs: &[&App]| runs.iter().map(|r| r.lines("delivered").len()).sum::<usize>();
        let deadline = Instant::now() + DELIVERY;
        while bob_delivered(&[&bob_first, &bob]) < sent_by_bob.len() {
            assert!(Instant::now() < deadline, "bob's messages were not all delivered\n{}\n{}", bob.proc.tail(), alice.proc.tail());
            std::thread::sleep(Duration::from_millis(25)); // polling logs, bounded
        }
        println!("{} all {} + {} messages delivered", w.t(), sent_by_alice.len(), sent_by_bob.len());

        // Each message received once, in order, as sent.
        let strip = |v: Vec<Said>| v.into_iter().map(|(_, seq, text)| (seq, text)).collect::<Vec<_>>();
        let received_by_bob = strip(all_said(&bob_runs, "received"));
        let received_by_alice = strip(all_said(&[&alice], "received"));
        assert_eq!(sent_by_alice.len(), 160, "alice did not send her 160 messages");
        assert!(sent_by_bob.len() >= 150, "bob sent only {} messages", sent_by_bob.len());
        assert_eq!(received_by_bob, strip(sent_by_alice.clone()), "bob did not receive alice's messages once each, in order");
        assert_eq!(received_by_alice, strip(sent_by_bob.clone()), "alice did not receive bob's messages once each, in order");
        assert_eq!(delivered_seqs(&[&alice]), (1..=sent_by_alice.len() as u64).collect::<Vec<_>>(), "alice's delivery marks");
        assert_eq!(delivered_seqs(&bob_runs), (1..=sent_by_bob.len() as u64).collect::<Vec<_>>(), "bob's delivery marks");

        // The lines a user sees when the network changes.
        for (who, app, words) in [("alice", &alice, &["path+", "path-", "moved", "online"][..]), ("bob", &bob, &["path+", "path-", "resumed"][..])] {
            for word in words {
                assert!(!app.lines(word).is_empty(), "{who} printed no {word} line\n{}", app.proc.tail());
            }
        }
        // Path lines name the kind of link, a lost path too (the flow's event carries it).
        let kinds = |lines: Vec<String>| lines.iter().filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned)).collect::<Vec<_>>();
        let (added, lost) = (kinds(alice.lines("path+")), kinds(alice.lines("path-")));
        assert!(added.iter().any(|k| k == "cell") && added.iter().any(|k| k == "wifi"), "alice's path+ lines: {added:?}");
        assert!(lost.iter().any(|k| k == "wifi"), "alice's path- lines: {lost:?}");
        // Alice's first flow died with bob's first run: she was online to the second one too.
        let onlines = alice.lines("online");
        assert!(onlines.len() >= 2, "alice was not online again after bob's restart: {onlines:?}");

        // Quit both; the history files hold the same conversation.
        alice.type_line("/quit");
        bob.type_line("/quit");
        for app in [&mut alice, &mut bob] {
            let status = app.proc.finish(Duration::from_secs(20));
            assert!(status.is_some_and(|s| s.success()), "{} did not quit cleanly: {status:?}\n{}", app.proc.what(), app.proc.tail());
        }
        let (a_hist, a_delivered) = history(&dir_a.join("history/bob.lab.log"));
        let (b_hist, b_delivered) = history(&dir_b.join("history/alice.lab.log"));
        let side = |h: &[(bool, u64, String)], out: bool| h.iter().filter(|m| m.0 == out).map(|m| (m.1, m.2.clone())).collect::<Vec<_>>();
        assert_eq!(side(&a_hist, true), side(&b_hist, false), "alice's sent messages differ from bob's received ones on disk");
        assert_eq!(side(&a_hist, false), side(&b_hist, true), "bob's sent messages differ from alice's received ones on disk");
        assert_eq!(a_delivered, side(&a_hist, true).len() as u64, "alice's history does not mark all her messages delivered");
        assert_eq!(b_delivered, side(&b_hist, true).len() as u64, "bob's history does not mark all his messages delivered");
        let mut by_word = BTreeMap::new();
        for o in alice.outputs().iter().chain(bob_first.outputs().iter()).chain(bob.outputs().iter()) {
            *by_word.entry(o.word.clone()).or_insert(0) += 1;
        }
        println!("{} histories match: {} messages; lines printed: {by_word:?}", w.t(), a_hist.len());
    }

    /// The sequence numbers of `delivered CONTACT #SEQ` lines, in order.
    fn delivered_seqs(runs: &[&App]) -> Vec<u64> {
        runs.iter()
            .flat_map(|r| r.lines("delivered"))
            .map(|l| l.split_whitespace().nth(1).and_then(|s| s.strip_prefix('#')).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no #SEQ in {l:?}")))
            .collect()
    }

    // -----------------------------------------------------------------------------------
    // Streaming
    // -----------------------------------------------------------------------------------

    const STREAM_SECONDS: u64 = 20;
    const BUFFER_MS: f64 = 2000.0;
    const BITRATE: &str = "4000";

    /// What one stream printed: the sender's reports and summary, the player's summary.
    struct Streamed {
        sender_reports: Vec<String>,
        sender: String,
        player: String,
    }

    /// Phone A streams to a player on the public host under `policy`; `during` runs once
    /// the stream is `at` seconds in (a Wi-Fi outage, a policy switch typed into the player).
    fn stream(w: &World, tag: &str, policy: &str, at: u64, during: impl FnOnce(&World, &mut App)) -> Streamed {
        let name = format!("tv-{tag}.lab");
        let (p_data, s_data) = (w.path(&format!("tv-{tag}")), w.path(&format!("cam-{tag}")));
        let mut player = App::start(
            w,
            w.lab.public_host(),
            &format!("stream play {name}"),
            &["stream", "play", "--me", &name, "--buffer-ms", "2000", "--data", p_data.to_str().unwrap()],
        );
        player.wait_line("ready", &name, START, &w.daemon_logs());
        let seconds = STREAM_SECONDS.to_string();
        let mut sender = App::start(
            w,
            w.lab.phone(Phone::A),
            &format!("stream send {policy}"),
            &["stream", "send", "--to", &name, "--bitrate-kbps", BITRATE, "--seconds", &seconds, "--policy", policy, "--data", s_data.to_str().unwrap()],
        );
        sender.wait_line("sending", &name, START, &player.proc.tail());
        sender.wait_for(&format!("report t={at}"), START, &player.proc.tail(), |o| o.iter().filter(|o| o.word == "report").count() as u64 >= at);
        during(w, &mut player);
        let limit = Duration::from_secs(STREAM_SECONDS + 60);
        player.wait_line("summary", "role=play", limit, &sender.proc.tail());
        sender.wait_line("summary", "role=send", limit, &player.proc.tail());
        for app in [&mut player, &mut sender] {
            let status = app.proc.finish(Duration::from_secs(20));
            assert!(status.is_some_and(|s| s.success()), "{} failed: {status:?}\n{}", app.proc.what(), app.proc.tail());
        }
        let out = Streamed { sender_reports: sender.lines("report"), sender: sender.lines("summary").remove(0), player: player.lines("summary").remove(0) };
        println!("{} [{tag}] sender: {}\n{} [{tag}] player: {}", w.t(), out.sender, w.t(), out.player);
        out
    }

    /// Phone A's Wi-Fi down for 8 s.
    fn wifi_outage(w: &World, _: &mut App) {
        w.lab.link_down(Phone::A, Access::Wifi).expect("Wi-Fi down");
        println!("{} WIFI DOWN on phone A", w.t());
        std::thread::sleep(Duration::from_secs(8)); // the outage's length
        w.lab.link_up(Phone::A, Access::Wifi).expect("Wi-Fi up");
        println!("{} WIFI UP on phone A", w.t());
    }

    /// The player got every chunk intact and never stalled longer than its buffer.
    fn assert_played_through(s: &Streamed, tag: &str) {
        let total = (STREAM_SECONDS * 10) as f64;
        assert_eq!(number(&s.player, "corrupt"), 0.0, "[{tag}] corrupt chunks: {}", s.player);
        assert_eq!(number(&s.player, "chunks"), total, "[{tag}] chunks missing: {}", s.player);
        assert_eq!(number(&s.player, "skipped"), 0.0, "[{tag}] chunks skipped: {}", s.player);
        assert_eq!(number(&s.player, "buffer_ms"), BUFFER_MS);
        let longest = number(&s.player, "longest_stall_ms");
        assert!(longest <= BUFFER_MS, "[{tag}] a stall of {longest} ms outlasted the {BUFFER_MS} ms buffer: {}", s.player);
    }

    /// Bytes the sender's summary says `kind` ("cell/direct") carried.
    fn path_bytes(summary: &str, kind: &str) -> f64 {
        value(summary, "path_bytes").split(',').filter(|p| p.starts_with(kind)).filter_map(|p| p.rsplit(':').next()?.parse::<f64>().ok()).sum()
    }

    #[test]
    #[ignore = "needs root and network namespaces (lab/setup.sh) and the samples' JVM build"]
    fn streaming_through_a_wifi_outage_under_each_policy_and_a_policy_switch() {
        let w = World::start(lab("20mbit 10ms", "20mbit 30ms"), 7461);

        let backup = stream(&w, "backup", "backup", 5, wifi_outage);
        assert_played_through(&backup, "backup");
        assert!(path_bytes(&backup.sender, "cell") > 1e6, "under backup, cellular carried nothing while Wi-Fi was down: {}", backup.sender);

        let energy = stream(&w, "energy", "energy", 5, wifi_outage);
        assert_played_through(&energy, "energy");
        let performance = stream(&w, "performance", "performance", 5, wifi_outage);
        assert_played_through(&performance, "performance");
        let (ej, pj) = (number(&energy.sender, "energy_j"), number(&performance.sender, "energy_j"));
        println!("{} energy estimate: {ej:.2} J under energy, {pj:.2} J under performance", w.t());
        assert!(ej < pj, "the same stream cost {ej} J under energy and {pj} J under performance");

        // Wi-Fi slower than the stream: under backup only Wi-Fi carries it (the player
        // falls behind); a switch typed into the player puts cellular to work.
        let wifi = w.lab.access_emulator(Phone::A, Access::Wifi).expect("phone A's Wi-Fi is emulated");
        wifi.set_spec("3mbit 10ms".parse().unwrap());
        let switched = stream(&w, "switch", "backup", 6, |w, player| {
            player.type_line("policy performance");
            player.wait_line("note", "asked the sender", START, &w.daemon_logs());
        });
        let cell_share = |r: &str| value(r, "paths").split(',').filter(|p| p.starts_with("cell")).filter_map(|p| p.rsplit(':').next()?.trim_end_matches('%').parse::<u32>().ok()).sum::<u32>();
        let (before, after): (Vec<&String>, Vec<&String>) = switched.sender_reports.iter().partition(|r| value(r, "policy") == "backup");
        assert!(before.len() >= 4 && after.len() >= 4, "reports before/after the switch: {} / {}\n{:?}", before.len(), after.len(), switched.sender_reports);
        // Backup moves data to cellular only while Wi-Fi stalls (its queue's oldest bytes
        // wait too long); performance keeps cellular in use. A sender starved of CPU for
        // a second (a loaded machine) may make less than Wi-Fi carries alone: one such
        // second is allowed.
        let idle = |rs: &[&String]| rs.iter().filter(|r| cell_share(r) == 0).count();
        assert!(idle(&before[1..]) * 2 >= before.len() - 1, "under backup, cellular carried data most seconds: {before:?}");
        assert!(idle(&after[1..]) <= 1, "after the switch to performance, cellular sat idle in more than one second: {after:?}");
        assert!(switched.sender.contains("policy=performance"), "{}", switched.sender);
        let shares = |rs: &[&String]| rs.iter().map(|r| cell_share(r).to_string()).collect::<Vec<_>>().join(" ");
        println!("{} switch: cellular's share each second under backup: {}; under performance: {}", w.t(), shares(&before), shares(&after));
    }
}
