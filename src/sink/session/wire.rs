//! What a session sends beyond the driver's own statements: the cancel key read back
//! to prove a session direct, the binary `COPY` stream, and the `data` column's bytes.

use std::pin::pin;

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncReadExt;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::render::Row;
use crate::sink::copy;

/// The backend process id in the cancel key the server sent at startup, read from a
/// cancel request written into memory instead of a socket.
pub(super) async fn announced_pid(client: &Client) -> Option<i32> {
    /// A cancel request: length 16, this code, process id, secret key.
    const CANCEL_REQUEST_CODE: i32 = 80_877_102;
    let (mut ours, mut theirs) = tokio::io::duplex(64);
    client
        .cancel_token()
        .cancel_query_raw(&mut ours, tokio_postgres::NoTls)
        .await
        .ok()?;
    let mut request = [0u8; 16];
    theirs.read_exact(&mut request).await.ok()?;
    let word = |at: usize| {
        i32::from_be_bytes([
            request[at],
            request[at + 1],
            request[at + 2],
            request[at + 3],
        ])
    };
    (word(0) == 16 && word(4) == CANCEL_REQUEST_CODE).then(|| word(8))
}

/// One binary COPY of `rows`, sent in chunks.
pub(super) async fn copy_rows(
    client: &Client,
    statement: Statement,
    rows: &[Row],
    jsonb: bool,
) -> Result<u64, tokio_postgres::Error> {
    use futures_util::SinkExt;
    // The driver sends what it is given as it comes: hand it chunks of this size.
    const CHUNK: usize = 256 * 1024;
    let sink = client.copy_in::<_, bytes::Bytes>(&statement).await?;
    let mut sink = pin!(sink);
    let mut buf = BytesMut::with_capacity(CHUNK + 4096);
    let mut bytes = Vec::with_capacity(CHUNK + 4096);
    copy::header(&mut bytes);
    for row in rows {
        copy::row(&mut bytes, row, jsonb);
        if bytes.len() >= CHUNK {
            buf.extend_from_slice(&bytes);
            bytes.clear();
            sink.send(buf.split().freeze()).await?;
        }
    }
    copy::trailer(&mut bytes);
    buf.extend_from_slice(&bytes);
    sink.send(buf.split().freeze()).await?;
    let rows = sink.as_mut().finish().await?;
    // `finish` returns at the COPY's CommandComplete, but the server commits only at the
    // Sync that follows, and the commit can still fail: a deferred constraint, a statement
    // timeout that fires in between, a backend that dies. The rows are then rolled back.
    // What the server says next reaches the same response stream, so reading on tells:
    // ReadyForQuery means committed (the driver, expecting nothing more, calls it an
    // unexpected message); an error from the server, or a closed connection, means not,
    // or not known.
    match sink.as_mut().finish().await {
        Err(e) if e.as_db_error().is_some() || e.is_closed() => Err(e),
        Err(e) if e.to_string().contains("unexpected message") => Ok(rows),
        Err(e) => Err(e),
        // A second CommandComplete cannot follow a COPY.
        Ok(_) => Ok(rows),
    }
}

/// The `data` column, serialized from the row: JSON text, after a version byte for
/// binary `jsonb`.
#[derive(Debug)]
pub(super) struct Data<'a> {
    pub row: &'a Row,
    pub jsonb: bool,
}

impl ToSql for Data<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if self.jsonb {
            out.put_u8(copy::JSONB_VERSION);
        }
        // Through a small buffer: measured cheaper than `BytesMut`'s `io::Write` adapter.
        let mut text = Vec::with_capacity(256);
        self.row.write_data(&mut text);
        out.extend_from_slice(&text);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}
