//! A deterministic simulated network for two [`FlowState`]s.
//!
//! Side 0 (A) is the client, side 1 (B) the server. A *link* is one subflow pair: one
//! `SubflowId` at each end and two ordered pipes (A→B, B→A), each with a one-way delay
//! and an optional bandwidth. Frames travel in the runtime's records: the record layer
//! ([`crate::session::records`]) packs, numbers and seals them and opens them again, with
//! the protocol's record limit, the records' growth on a fresh subflow and the replay
//! window on the path. The simulation plays the runtime: it moves bytes between the app
//! and the flow, polls transmits, delivers records, fires timeouts, and reacts to events.
//!
//! Virtual time only advances to the next thing that can happen (delivery, timer,
//! scheduled action), so a five-minute outage costs nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::proto::{
    FlowConfig, FlowError, FlowEvent, FlowState, FlowStatus, Frame, ReadOutcome, SubflowId,
};
use crate::session::records::{
    open, seal_record_into, split_record, BatchLimit, Delivery, Packer, PacketNumbers, Receiver,
    Record, RecordKeys, MAX_FORGED,
};
use crate::session::{session_pair, SessionKeys};

/// One record in a pipe: its sealed bytes, and whether it is a copy of one sent before
/// (which the receiver must refuse).
#[derive(Debug)]
pub struct InFlight {
    pub sealed: Bytes,
    pub replay: bool,
}

/// xorshift64*: deterministic randomness for fault injection.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn percent(&mut self, pct: u32) -> bool {
        self.below(100) < pct as u64
    }
}

#[derive(Debug)]
pub struct Pipe {
    pub queue: VecDeque<(Instant, InFlight)>,
    pub delay: Duration,
    /// Bytes per second; `None` uses the simulation's `bandwidth`.
    pub bandwidth: Option<u64>,
    busy_until: Instant,
    last_deliver: Instant,
    pub records_sent: u64,
}

impl Pipe {
    fn new(delay: Duration, now: Instant) -> Self {
        Pipe {
            queue: VecDeque::new(),
            delay,
            bandwidth: None,
            busy_until: now,
            last_deliver: now,
            records_sent: 0,
        }
    }

    fn push(&mut self, at: Instant, rec: InFlight) {
        let at = at.max(self.last_deliver);
        self.last_deliver = at;
        self.queue.push_back((at, rec));
    }
}

#[derive(Debug)]
pub struct Link {
    /// Subflow id at A and at B.
    pub ids: [SubflowId; 2],
    /// Whether each end still has the subflow.
    pub open: [bool; 2],
    /// Everything sent is lost.
    pub blackhole: bool,
    /// Pipe 0 carries A→B, pipe 1 B→A.
    pub pipes: [Pipe; 2],
    /// Each end's record packer for this subflow.
    packers: [Packer; 2],
}

/// The application on one side: writes `data`, reads into `received`.
#[derive(Debug, Default)]
pub struct App {
    pub data: Vec<u8>,
    pub written: usize,
    pub write_sizes: Vec<usize>,
    write_idx: usize,
    pub finish_when_written: bool,
    pub finish_called: bool,
    pub write_err: Option<FlowError>,
    pub received: Vec<u8>,
    pub got_fin: bool,
    pub paused: bool,
    pub read_err: Option<FlowError>,
    pub max_recv_buffered: usize,
    pub max_send_buffered: usize,
}

pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub ends: [FlowState; 2],
    pub apps: [App; 2],
    pub links: Vec<Link>,
    /// `(when, side, link)`: the runtime at `side` calls `remove_subflow`.
    pub removals: Vec<(Instant, usize, usize)>,
    /// Every event, with the time since `t0`.
    pub events: Vec<(Duration, usize, FlowEvent)>,
    /// Bytes per second per pipe; `None` is unlimited.
    pub bandwidth: Option<u64>,
    pub default_delay: Duration,
    /// When the client has no live subflow, open a new link after this long.
    pub auto_reconnect: Option<Duration>,
    reconnect_at: Option<Instant>,
    pub rng: Rng,
    /// Chance that a record carrying DATA is sent twice on its own subflow: half the time
    /// the same sealed bytes (a replay, which the receiver must drop), otherwise its frames
    /// again in a record of their own (duplicate data the flow must absorb).
    pub dup_pct: u32,
    /// Chance that a record carrying DATA is also delivered, late, on another subflow.
    pub cross_pct: u32,
    /// Removals sometimes come with a (random) hint of units that never left.
    pub unsent_hints: bool,
    /// Each side's session keys: A is the handshake's initiator.
    keys: [Arc<SessionKeys>; 2],
    packet_numbers: [PacketNumbers; 2],
    receivers: [Receiver; 2],
    /// Replayed records that reached a receiver, and the ones it dropped (all of them).
    pub replays_delivered: u64,
    /// Records the receivers dropped as replays although the sender sent them once
    /// (too far behind the window); their data is re-sent.
    pub fresh_refused: u64,
}

impl Sim {
    pub fn new(cfg: FlowConfig) -> Self {
        Self::with_configs(cfg.clone(), cfg)
    }

    pub fn with_configs(a: FlowConfig, b: FlowConfig) -> Self {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            ends: [FlowState::new(a, t0), FlowState::new(b, t0)],
            apps: [App::default(), App::default()],
            links: Vec::new(),
            removals: Vec::new(),
            events: Vec::new(),
            bandwidth: None,
            default_delay: Duration::from_millis(20),
            auto_reconnect: None,
            reconnect_at: None,
            rng: Rng::new(1),
            dup_pct: 0,
            cross_pct: 0,
            unsent_hints: false,
            keys: session_pair().into(),
            packet_numbers: Default::default(),
            receivers: Default::default(),
            replays_delivered: 0,
            fresh_refused: 0,
        }
    }

    /// Seals records under a new key every `2^bits` packet numbers instead (a flow then
    /// crosses many epochs, with records of several in flight and re-sent).
    pub fn use_epoch_bits(&mut self, bits: u32) {
        let keys = |k: &SessionKeys, send: &[u8; 32], recv: &[u8; 32]| {
            Arc::new(SessionKeys {
                send: RecordKeys::with_limits(send, bits, MAX_FORGED),
                recv: RecordKeys::with_limits(recv, bits, MAX_FORGED),
                flow_id: k.flow_id,
                join_key: k.join_key,
                remote_static: k.remote_static,
            })
        };
        let [a, b] = &self.keys;
        self.keys = [keys(a, &[1; 32], &[2; 32]), keys(b, &[2; 32], &[1; 32])];
    }

    /// Records `side` sealed so far.
    pub fn records_sealed(&self, side: usize) -> u64 {
        self.packet_numbers[side].next_number()
    }

    /// Records that failed authentication at `side`, and the epochs whose keys it keeps.
    pub fn receiving_keys(&self, side: usize) -> (u64, Vec<u64>) {
        (self.keys[side].recv.forged(), self.keys[side].recv.cached_epochs())
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Gives `side` bytes to send (`finish` after them when `finish`).
    pub fn send(&mut self, side: usize, data: Vec<u8>, write_sizes: Vec<usize>, finish: bool) {
        let app = &mut self.apps[side];
        app.data = data;
        app.write_sizes = if write_sizes.is_empty() {
            vec![16 * 1024]
        } else {
            write_sizes
        };
        app.finish_when_written = finish;
    }

    /// A new subflow pair with its own bandwidth (bytes per second, each direction).
    pub fn add_path(&mut self, delay: Duration, bandwidth: u64) -> usize {
        let link = self.add_link(delay);
        for p in &mut self.links[link].pipes {
            p.bandwidth = Some(bandwidth);
        }
        link
    }

    /// Payload bytes side `side` received so far.
    pub fn received(&self, side: usize) -> usize {
        self.apps[side].received.len()
    }

    /// Runs until `at` in steps of `step`, returning the longest time in which side
    /// `side` read nothing while it had not read everything yet.
    pub fn longest_read_gap(&mut self, side: usize, at: Duration, step: Duration) -> Duration {
        let (mut last, mut since, mut gap) = (self.received(side), self.elapsed(), Duration::ZERO);
        while self.elapsed() < at && !self.done() {
            let next = self.elapsed() + step;
            self.run_until(next);
            if self.received(side) != last || self.apps[side].got_fin {
                last = self.received(side);
                since = self.elapsed();
            }
            gap = gap.max(self.elapsed() - since);
        }
        gap
    }

    /// A new subflow pair, added at both ends now.
    pub fn add_link(&mut self, delay: Duration) -> usize {
        let ids = [
            self.ends[0].add_subflow(self.now),
            self.ends[1].add_subflow(self.now),
        ];
        // Both ends name the subflow alike, as the runtime does with join sequences.
        let token = self.links.len() as u64;
        for (end, id) in self.ends.iter_mut().zip(ids) {
            end.set_subflow_token(id, token);
        }
        self.links.push(Link {
            ids,
            open: [true, true],
            blackhole: false,
            pipes: [Pipe::new(delay, self.now), Pipe::new(delay, self.now)],
            packers: Default::default(),
        });
        self.drain_events();
        self.links.len() - 1
    }

    /// The path breaks: frames in flight are lost. Each side's runtime notices (and calls
    /// `remove_subflow`) after the given delay, or never (`None`: liveness must find it).
    pub fn kill_link(&mut self, link: usize, notice: [Option<Duration>; 2]) {
        self.blackhole(link);
        for (side, n) in notice.iter().enumerate() {
            if let Some(d) = n {
                self.removals.push((self.now + *d, side, link));
            }
        }
    }

    /// Everything on the link is silently lost from now on; nobody is told.
    pub fn blackhole(&mut self, link: usize) {
        let l = &mut self.links[link];
        l.blackhole = true;
        for p in &mut l.pipes {
            p.queue.clear();
        }
    }

    pub fn live_links(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&i| self.links[i].open == [true, true] && !self.links[i].blackhole)
            .collect()
    }

    pub fn done(&self) -> bool {
        self.apps.iter().all(|a| a.got_fin)
            && self.ends.iter().all(|e| e.status() == FlowStatus::Finished)
    }

    pub fn events_of(&self, side: usize) -> impl Iterator<Item = &FlowEvent> {
        self.events
            .iter()
            .filter(move |(_, s, _)| *s == side)
            .map(|(_, _, e)| e)
    }

    /// Runs until `cond` holds, time passes `limit` (since t0), or nothing can happen.
    pub fn run_while(&mut self, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.t0 + limit;
        loop {
            self.pump();
            if !cond(self) {
                return true;
            }
            match self.next_time() {
                Some(t) if t <= end => {
                    assert!(
                        t > self.now,
                        "next event at {:?} is not in the future",
                        t - self.t0
                    );
                    self.now = t;
                }
                _ => {
                    self.now = self.now.max(end);
                    self.pump();
                    return !cond(self);
                }
            }
        }
    }

    /// Runs until `t0 + at`.
    pub fn run_until(&mut self, at: Duration) {
        let end = self.t0 + at;
        self.run_while(at, |s| s.now < end);
    }

    pub fn run_for(&mut self, d: Duration) {
        let at = self.elapsed() + d;
        self.run_until(at);
    }

    /// Runs until both sides finished, both apps saw FIN; `false` if `limit` passed first.
    pub fn run_to_completion(&mut self, limit: Duration) -> bool {
        self.run_while(limit, |s| !s.done())
    }

    /// Asserts both byte streams arrived exactly and the flow finished on both ends.
    pub fn assert_complete(&self) {
        for side in 0..2 {
            let (tx, rx) = (&self.apps[side], &self.apps[1 - side]);
            assert_eq!(
                rx.received.len(),
                tx.data.len(),
                "side {side} → {} length",
                1 - side
            );
            assert!(
                rx.received == tx.data,
                "side {side} → {} content differs",
                1 - side
            );
            assert_eq!(
                self.ends[side].status(),
                FlowStatus::Finished,
                "side {side}"
            );
            let stats = self.ends[1 - side].stats();
            assert_eq!(stats.bytes_received, tx.data.len() as u64);
            assert_eq!(stats.bytes_read, tx.data.len() as u64);
            assert_eq!(self.ends[side].stats().bytes_acked, tx.data.len() as u64);
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t: Instant| t.min(x)));
        for e in &self.ends {
            if let Some(x) = e.poll_timeout() {
                consider(x);
            }
        }
        for l in &self.links {
            for (dir, p) in l.pipes.iter().enumerate() {
                if let Some((at, _)) = p.queue.front() {
                    consider(*at);
                }
                if l.open[dir] && self.ends[dir].wants_transmit(l.ids[dir]) {
                    if let Some(ready) = self.backlog_ready_at(p) {
                        consider(ready);
                    }
                }
            }
        }
        for (at, _, _) in &self.removals {
            consider(*at);
        }
        if let Some(at) = self.reconnect_at {
            consider(at);
        }
        t
    }

    /// With limited bandwidth the socket buffer holds ~64 KiB of backlog; beyond that
    /// the runtime waits until the pipe drained to that level.
    fn backlog_ready_at(&self, p: &Pipe) -> Option<Instant> {
        let bw = p.bandwidth.or(self.bandwidth)?;
        let allowance = Duration::from_secs_f64(64.0 * 1024.0 / bw as f64);
        Some(p.busy_until.checked_sub(allowance).unwrap_or(p.busy_until))
    }

    fn pump(&mut self) {
        for _round in 0..100_000 {
            let mut progress = false;
            // Scheduled removals (the runtime noticed a broken subflow).
            let now = self.now;
            let due: Vec<_> = self
                .removals
                .iter()
                .filter(|r| r.0 <= now)
                .cloned()
                .collect();
            self.removals.retain(|r| r.0 > now);
            for (_, side, link) in due {
                let l = &mut self.links[link];
                if l.open[side] {
                    l.open[side] = false;
                    let id = l.ids[side];
                    if self.unsent_hints && self.rng.percent(50) {
                        // The runtime may know what never left the socket; a wrong guess
                        // must cost duplicates only.
                        let sent = self.ends[side].stats().bytes_sent;
                        let from = self.rng.below(sent + 1);
                        let hint = [from..from + 1 + self.rng.below(200_000)];
                        self.ends[side].remove_subflow_unsent(id, now, &hint);
                    } else {
                        self.ends[side].remove_subflow(id, now);
                    }
                    progress = true;
                }
            }
            if self.reconnect_at.is_some_and(|t| t <= now) {
                self.reconnect_at = None;
                self.add_link(self.default_delay);
                progress = true;
            }
            for side in 0..2 {
                if self.ends[side].poll_timeout().is_some_and(|t| t <= now) {
                    self.ends[side].handle_timeout(now);
                    if let Some(t) = self.ends[side].poll_timeout() {
                        assert!(
                            t > now,
                            "side {side}: timer at {:?} still due after handle_timeout",
                            t - self.t0
                        );
                    }
                    progress = true;
                }
            }
            self.drain_events();
            for side in 0..2 {
                progress |= self.app_io(side);
            }
            for link in 0..self.links.len() {
                for side in 0..2 {
                    progress |= self.transmit(link, side);
                }
            }
            for link in 0..self.links.len() {
                for dir in 0..2 {
                    progress |= self.deliver(link, dir);
                }
            }
            self.drain_events();
            if let Some(d) = self.auto_reconnect {
                if self.reconnect_at.is_none() && self.ends[0].live_subflows() == 0 && !self.done()
                {
                    self.reconnect_at = Some(self.now + d);
                }
            }
            if !progress {
                return;
            }
        }
        panic!("no quiescence at {:?}", self.elapsed());
    }

    fn app_io(&mut self, side: usize) -> bool {
        let mut progress = false;
        let (end, app) = (&mut self.ends[side], &mut self.apps[side]);
        while app.written < app.data.len() && app.write_err.is_none() {
            let size = app.write_sizes[app.write_idx % app.write_sizes.len()].max(1);
            let chunk = &app.data[app.written..(app.written + size).min(app.data.len())];
            // Every other write goes in as a chunk of its own, as large writes do in the
            // runtime (copied before the lock): what fits of it, or a plain write when
            // nothing does (which says why).
            let room = end.send_capacity().min(chunk.len());
            let written = match app.write_idx % 2 == 1 && room > 0 {
                true => end.write_chunk(bytes::Bytes::copy_from_slice(&chunk[..room])),
                false => end.write(chunk),
            };
            match written {
                Ok(0) => break,
                Ok(n) => {
                    app.written += n;
                    if n == chunk.len() {
                        app.write_idx += 1;
                    }
                    progress = true;
                }
                Err(e) => app.write_err = Some(e),
            }
        }
        if app.written == app.data.len() && app.finish_when_written && !app.finish_called {
            app.finish_called = true;
            if let Err(e) = end.finish() {
                app.write_err = Some(e);
            }
            progress = true;
        }
        app.max_send_buffered = app.max_send_buffered.max(end.send_buffered());
        app.max_recv_buffered = app.max_recv_buffered.max(end.recv_buffered());
        if !app.paused && !app.got_fin && app.read_err.is_none() {
            let mut buf = [0u8; 16 * 1024];
            let mut chunks = Vec::new();
            for turn in 0.. {
                // Every other read takes the payloads themselves, as large reads do in
                // the runtime (copied after the lock).
                let outcome = match turn % 2 {
                    0 => end.read(&mut buf),
                    _ => end.read_chunks(buf.len(), &mut chunks),
                };
                match outcome {
                    Ok(ReadOutcome::Data(n)) => {
                        assert!(n > 0);
                        match turn % 2 {
                            0 => app.received.extend_from_slice(&buf[..n]),
                            _ => {
                                assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), n);
                                chunks.drain(..).for_each(|c| app.received.extend_from_slice(&c));
                            }
                        }
                        progress = true;
                    }
                    Ok(ReadOutcome::Blocked) => break,
                    Ok(ReadOutcome::Fin) => {
                        app.got_fin = true;
                        progress = true;
                        break;
                    }
                    Err(e) => {
                        app.read_err = Some(e);
                        progress = true;
                        break;
                    }
                }
            }
        }
        progress
    }

    fn transmit(&mut self, link: usize, side: usize) -> bool {
        let mut progress = false;
        loop {
            let l = &self.links[link];
            if !l.open[side] {
                return progress;
            }
            if self
                .backlog_ready_at(&l.pipes[side])
                .is_some_and(|ready| ready > self.now)
            {
                return progress;
            }
            let id = l.ids[side];
            // One record at a time (two when control frames precede DATA), so the pipe's
            // backlog is checked as often as the runtime's socket would be.
            let one = BatchLimit {
                records: 1,
                bytes: usize::MAX,
            };
            let batch = self.links[link].packers[side].pack(
                &mut self.ends[side],
                id,
                self.now,
                &mut self.packet_numbers[side],
                one,
            );
            if batch.is_empty() {
                assert!(
                    !self.ends[side].wants_transmit(id),
                    "wants_transmit but poll_transmit gave nothing"
                );
                return progress;
            }
            progress = true;
            for record in batch.records {
                self.send_record(link, side, record);
            }
        }
    }

    fn seal(&self, side: usize, record: &Record) -> Bytes {
        let mut out = BytesMut::new();
        seal_record_into(&self.keys[side], record, &mut out).expect("records within the limit seal");
        out.freeze()
    }

    /// Puts a record on the link's pipe from `side`, and the copies fault injection asks for.
    fn send_record(&mut self, link: usize, side: usize, record: Record) {
        let sealed = self.seal(side, &record);
        if self.links[link].blackhole {
            return;
        }
        let now = self.now;
        let p = &mut self.links[link].pipes[side];
        let bw = p.bandwidth.or(self.bandwidth);
        let start = p.busy_until.max(now);
        p.busy_until = match bw {
            Some(bw) => start + Duration::from_secs_f64(sealed.len() as f64 / bw as f64),
            None => start,
        };
        let at = p.busy_until + p.delay;
        p.push(at, InFlight { sealed: sealed.clone(), replay: false });
        p.records_sent += 1;
        if self.dup_pct == 0 && self.cross_pct == 0 || !record.has_data() {
            return;
        }
        if self.rng.percent(self.dup_pct) {
            let at = at + Duration::from_millis(self.rng.below(50));
            let copy = match self.rng.percent(50) {
                true => InFlight { sealed, replay: true },
                false => {
                    let again = self.packet_numbers[side].number(record.frames.clone()).expect("numbers left");
                    InFlight { sealed: self.seal(side, &again), replay: false }
                }
            };
            self.links[link].pipes[side].push(at, copy);
        }
        if self.rng.percent(self.cross_pct) {
            let others: Vec<usize> = self
                .live_links()
                .into_iter()
                .filter(|&o| o != link && self.links[o].pipes[side].records_sent > 0)
                .collect();
            if !others.is_empty() {
                let o = others[self.rng.below(others.len() as u64) as usize];
                let late = Duration::from_millis(self.rng.below(500) * self.rng.below(2));
                let frames = self.reslice(record.frames);
                let copy = self.packet_numbers[side].number(frames).expect("numbers left");
                let sealed = self.seal(side, &copy);
                let p = &mut self.links[o].pipes[side];
                let at = now + p.delay + late;
                p.push(at, InFlight { sealed, replay: false });
            }
        }
    }

    /// The DATA frames of a record, half the time cut to a random sub-range, so copies
    /// overlap what the receiver has partially (as a sender re-segmenting would).
    fn reslice(&mut self, frames: Vec<Frame>) -> Vec<Frame> {
        let mut out = Vec::new();
        for f in frames {
            let Frame::Data {
                offset,
                fin,
                payload,
            } = f
            else {
                continue;
            };
            let len = payload.len() as u64;
            let cut = 1 + self.rng.below(len.max(1));
            let (from, to) = match self.rng.below(4) {
                _ if len == 0 => (0, 0),
                0 => (0, len),
                1 => (0, cut),
                2 => (cut - 1, len),
                _ => {
                    let a = self.rng.below(len);
                    (a, a + 1 + self.rng.below(len - a))
                }
            };
            let fin = fin && to == len;
            let payload = payload.slice(from as usize..to as usize);
            out.push(Frame::Data {
                offset: offset + from,
                fin,
                payload,
            });
        }
        out
    }

    fn deliver(&mut self, link: usize, dir: usize) -> bool {
        let dst = 1 - dir;
        let mut progress = false;
        loop {
            let l = &mut self.links[link];
            match l.pipes[dir].queue.front() {
                Some((at, _)) if *at <= self.now => {}
                _ => return progress,
            }
            let (_, rec) = l.pipes[dir].queue.pop_front().unwrap();
            progress = true;
            if !l.open[dst] || l.blackhole {
                continue;
            }
            let id = l.ids[dst];
            let mut bytes = BytesMut::from(&rec.sealed[..]);
            let sealed = split_record(&mut bytes).expect("a whole record");
            assert!(bytes.is_empty(), "one record per pipe entry");
            let opened = open(&self.keys[dst], sealed).expect("an honest peer's records open");
            match self.receivers[dst].deliver(&mut self.ends[dst], id, opened, self.now) {
                Ok(Delivery::Fresh) => assert!(!rec.replay, "side {dst} took a replayed record"),
                Ok(Delivery::Replayed) if rec.replay => self.replays_delivered += 1,
                Ok(Delivery::Replayed) => self.fresh_refused += 1,
                Err(e) => panic!(
                    "side {dst} at {:?}: honest peer flagged as violation: {e}",
                    self.elapsed()
                ),
            }
            // Events (e.g. a failure) before the next record.
            self.drain_events();
        }
    }

    fn drain_events(&mut self) {
        for side in 0..2 {
            while let Some(ev) = self.ends[side].poll_event() {
                if let FlowEvent::SubflowDead { id } = &ev {
                    // The runtime closes the socket. If the path still works, the peer
                    // sees the close one delay later.
                    if let Some(link) = self
                        .links
                        .iter()
                        .position(|l| l.ids[side] == *id && l.open[side])
                    {
                        let l = &mut self.links[link];
                        l.open[side] = false;
                        if !l.blackhole {
                            let at = self.now + l.pipes[side].delay;
                            self.removals.push((at, 1 - side, link));
                        }
                    }
                }
                self.events.push((self.now - self.t0, side, ev));
            }
        }
    }
}
