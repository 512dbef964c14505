//! The record layer: how a flow's frames become sealed, numbered records on a subflow and
//! how bytes read from a subflow become authenticated frames again.
//!
//! It sits between the protocol state machine ([`FlowState`](crate::proto::FlowState)) and
//! the sockets, and does no I/O itself, so the runtime and the simulator run the same
//! code:
//! - [`Packer`] (one per subflow) takes frames from the flow and closes them into records:
//!   the record size limit grows from [`FIRST_RECORD_LIMIT`] to [`MAX_RECORD_PLAINTEXT`],
//!   control frames followed by DATA get a record of their own, and every record takes the
//!   next number from the flow's [`PacketNumbers`]. A [`Batch`] also logs which DATA went
//!   into which stretch of the sealed bytes, so a lost subflow can tell what never left.
//! - [`seal`](self::seal) seals a record in place (the packet number is the AEAD nonce);
//!   [`Batch::seal_into`] encodes and seals a whole batch outside the flow's lock.
//! - [`split_record`] cuts whole records off the bytes a socket delivered, [`open`]
//!   authenticates and decodes one (outside the lock too), and [`Receiver`] hands an
//!   opened record's frames to the flow unless its packet number was seen before.
//! - [`RecordKeys`] holds a direction's key schedule: a key per epoch of packet numbers,
//!   so no key seals more records than AES-GCM bears; the last packet number; and the
//!   count of forged records, which ends the flow at its limit.

mod keys;
mod pack;
mod read;
mod seal;

pub(crate) use keys::RecordKeys;
pub(crate) use pack::{Batch, BatchLimit, Packer, PacketNumbers};
pub(crate) use read::{bytes_wanted, open, split_record, Delivery, OpenError, Receiver};
pub(crate) use seal::RECORD_HEADER_LEN;
#[cfg(test)]
pub(crate) use keys::MAX_FORGED;
#[cfg(test)]
pub(crate) use pack::{seal_record_into, Record};
#[cfg(test)]
pub(crate) use seal::{MAX_RECORD_PLAINTEXT, TAG_LEN};
