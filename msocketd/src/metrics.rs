//! Prometheus metrics on a tiny HTTP endpoint, shared by the daemon's services.
//!
//! The endpoint answers one thing, `GET /metrics`, with a page of text in Prometheus'
//! exposition format; a web framework would be most of the binary for that, so the
//! HTTP/1.1 it speaks is written here, and bounded like everything else the daemon
//! faces: a request is read up to [`MAX_REQUEST`] bytes within [`REQUEST_TIMEOUT`], the
//! answer is written within the same time, the connection is then closed (no
//! keep-alive), and at most [`MAX_SCRAPES`] connections are served at once (more are
//! closed at once). A scraper gone wrong, or anyone else who reaches the port, can hold
//! neither memory nor tasks.
//!
//! Services keep their counters in atomics and render the page at scrape time
//! ([`Exposition`]): nothing is kept between scrapes.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The most bytes of a request read (its request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long reading a request, and then writing its answer, may each take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; beyond this a connection is closed unanswered.
pub const MAX_SCRAPES: usize = 8;

/// A page of metrics in the Prometheus text format (version 0.0.4), written one family
/// at a time, each with its `# HELP` and `# TYPE` lines.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A counter: a total that only grows while the process lives.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "counter");
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A gauge: a value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "gauge");
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A counter with one label, one sample per value of the label.
    pub fn counters_by(&mut self, name: &str, help: &str, label: &str, samples: &[(&str, u64)]) {
        self.family(name, help, "counter");
        for (value, n) in samples {
            let _ = writeln!(self.out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Serves `GET /metrics` on `listener` with the page `render` makes, until `shutdown`
/// completes.
pub async fn serve<F, Fut>(listener: TcpListener, render: F, shutdown: impl Future)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    let render = Arc::new(render);
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut tasks = crate::accept::accept_until(&listener, shutdown, "metrics", JoinSet::new(), |stream, peer, tasks| {
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many scrapes at once; closing");
            return;
        };
        let render = Arc::clone(&render);
        tasks.spawn(async move {
            if let Err(e) = scrape(stream, &*render).await {
                tracing::debug!(%peer, error = %e, "metrics request failed");
            }
            drop(slot);
        });
    })
    .await;
    tasks.shutdown().await;
}

/// Why a scrape was not answered.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("request not complete within {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error("request over {MAX_REQUEST} bytes")]
    TooLong,
    #[error("connection closed before the request ended")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request from `stream` and answers it.
async fn scrape<F, Fut>(mut stream: TcpStream, render: &F) -> Result<(), ScrapeError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(e @ ScrapeError::TooLong)) => {
            let _ = respond(&mut stream, "431 Request Header Fields Too Large", "", "request too long\n").await;
            return Err(e);
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ScrapeError::Timeout),
    };
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_ascii_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let (status, extra, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", "", render().await),
        ("GET" | "HEAD", _) => ("404 Not Found", "", "not found; metrics are at /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "Allow: GET, HEAD\r\n", "only GET /metrics\n".to_string()),
    };
    let body = if method == "HEAD" { String::new() } else { body };
    respond(&mut stream, status, extra, &body).await
}

/// Reads up to the end of the request's headers (a blank line), at most [`MAX_REQUEST`]
/// bytes. A GET has no body, so nothing after them matters.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, ScrapeError> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(ScrapeError::TooLong);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(ScrapeError::Closed);
        }
        // Look from a little before the new bytes: the blank line may straddle reads.
        let from = len.saturating_sub(3);
        len += n;
        let seen = &buf[from..len];
        if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.windows(2).any(|w| w == b"\n\n") {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// Writes an answer and closes the connection, within [`REQUEST_TIMEOUT`].
async fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &str) -> Result<(), ScrapeError> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, write).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ScrapeError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_help_and_type() {
        let mut page = Exposition::new();
        page.counter("x_total", "Things.", 3);
        page.gauge("y", "Now.", 1);
        page.counters_by("z_total", "By kind.", "kind", &[("a", 1), ("b", 2)]);
        assert_eq!(
            page.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n\
             # HELP y Now.\n# TYPE y gauge\ny 1\n\
             # HELP z_total By kind.\n# TYPE z_total counter\nz_total{kind=\"a\"} 1\nz_total{kind=\"b\"} 2\n"
        );
    }

    async fn ask(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
        answer
    }

    #[tokio::test]
    async fn the_endpoint_answers_metrics_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, || async { "up 1\n".to_string() }, stopped));
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 5\r\n") && ok.ends_with("\r\n\r\nup 1\n"), "{ok}");
        // The blank line split across writes, and a query string.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /metrics?x=1 HTTP/1.1\r\n\r").await.unwrap();
        stream.write_all(b"\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(ask(addr, b"GET / HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        assert!(ask(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 405"));
        let head = ask(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        // Endless headers are cut off, answered 431.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let junk = vec![b'a'; MAX_REQUEST + 100];
        let _ = stream.write_all(&junk).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap();
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&answer));
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    }
}
