//! Reading a subflow's opening exchange off a socket.
//!
//! What the bytes mean, and whether a JOIN is admitted, is decided in
//! [`session::opening`](crate::session::opening) without I/O; this reads exactly the bytes
//! its decoders ask for (never the records behind them). Every read is bounded in size
//! here and, by the caller, in time.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::session::opening::{OpeningError, Progress};

/// Why an opening exchange could not be read: its decoder refused the bytes, or the
/// socket failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError<E = OpeningError> {
    #[error(transparent)]
    Decode(E),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads until `decode` is done with the bytes read so far.
pub(crate) async fn read_exchange<T, E>(
    r: &mut (impl AsyncRead + Unpin),
    mut decode: impl FnMut(&[u8]) -> Result<Progress<T>, E>,
) -> Result<T, ExchangeError<E>> {
    let mut buf = Vec::new();
    loop {
        match decode(&buf).map_err(ExchangeError::Decode)? {
            Progress::Done(value) => return Ok(value),
            Progress::Need(n) => {
                let have = buf.len();
                debug_assert!(n > have);
                buf.resize(n, 0);
                r.read_exact(&mut buf[have..]).await?;
            }
        }
    }
}
