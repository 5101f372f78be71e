//! What went wrong talking to the database: classified for the decision that follows
//! (is the database down, or was only this row refused? may the statement have run?)
//! and worded for the operator by its cause, not by the step that met it.

use std::fmt;

use tokio_postgres::error::SqlState;

use super::connect::Address;

/// The cause of a failure, coarse enough to decide on and to word a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No connection: refused, unreachable, no such host.
    Unreachable,
    /// Something accepted the connection but did not answer in time.
    Silent,
    /// The peer answered with something that is not the PostgreSQL protocol.
    NotPostgres,
    /// The server's TLS certificate failed the check `sslmode` asks for.
    Untrusted,
    /// Authentication or authorization failed (wrong password, pg_hba.conf, no database).
    Login,
    /// The server turned the session away (too many connections, shutting down, a
    /// standby where writes are wanted).
    Refused,
    /// The connection broke.
    Lost,
    /// A statement took longer than its bound (a locked table, a stuck server).
    Timeout,
    /// The role may not write to the table.
    Permission,
    /// The table does not exist.
    NoTable,
    /// The table lacks pglog's columns or has other types.
    Shape,
    /// The server refused this statement for its content (a constraint, a trigger):
    /// other rows may pass.
    Rejected,
}

impl Kind {
    /// Whether the database as a whole is unusable, rather than one row refused.
    pub fn is_outage(self) -> bool {
        self != Kind::Rejected
    }
}

/// One failure: its cause, the driver's words, and whether the statement may have run.
#[derive(Debug, Clone)]
pub(crate) struct Trouble {
    pub kind: Kind,
    pub detail: String,
    /// The request was sent and no answer came: the server may have committed it.
    pub maybe_done: bool,
}

impl Trouble {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Trouble {
        Trouble {
            kind,
            detail: detail.into(),
            maybe_done: false,
        }
    }

    /// Marks the statement's outcome as unknown.
    pub fn maybe_done(mut self) -> Trouble {
        self.maybe_done = true;
        self
    }

    /// A failure while opening a session at `address`.
    pub fn from_connect(error: &tokio_postgres::Error, address: &Address) -> Trouble {
        let text = crate::error::chain(error);
        // The driver's own words when the server asks for a password and none was found.
        if text.contains("password missing") {
            return Trouble::new(
                Kind::Login,
                format!("{address}: the server asks for a password and none was found"),
            );
        }
        let kind = match classify(error) {
            // Before the session exists, a broken connection is a refusal to talk.
            Kind::Lost => Kind::Unreachable,
            kind => kind,
        };
        Trouble::new(kind, format!("{address}: {text}"))
    }

    /// A failure of a statement on an open session.
    pub fn from_statement(error: &tokio_postgres::Error) -> Trouble {
        let text = crate::error::chain(error);
        // pgbouncer in statement mode refuses transactions, and closes the connection.
        if text.contains("transaction blocks not allowed") {
            return Trouble::new(
                Kind::Refused,
                format!(
                    "{text}; pglog creates its table in a transaction: create the table \
                     beforehand, or use transaction pooling"
                ),
            );
        }
        Trouble::new(classify(error), text)
    }

    /// The same failure, known not to have written anything (it came before the write).
    pub fn not_done(mut self) -> Trouble {
        self.maybe_done = false;
        self
    }

    /// The operator's notice: what happened to what, and what to change.
    pub fn describe(&self, target: &str, table: &str) -> String {
        let detail = &self.detail;
        match self.kind {
            Kind::Unreachable => format!("cannot connect to {target}: {detail}"),
            Kind::Silent => format!("cannot connect to {target}: {detail}"),
            Kind::Untrusted => format!(
                "{target} presented a certificate pglog cannot trust ({detail}); give the \
                 authority that signed it (sslrootcert), connect by a name the certificate \
                 holds, or relax sslmode"
            ),
            Kind::NotPostgres => format!(
                "the peer at {target} did not answer as PostgreSQL ({detail}); check the host and \
                 port of the DSN"
            ),
            Kind::Login => format!(
                "{target} refused the login: {detail}; check the user, password, database and \
                 the server's pg_hba.conf"
            ),
            Kind::Refused => format!("{target} turned the session away: {detail}"),
            Kind::Lost => format!("lost the connection to {target}: {detail}"),
            Kind::Timeout => format!(
                "writing to {table} on {target} took longer than the statement timeout \
                 ({detail}); is the table locked, the server stuck, or the load more than it \
                 can take?"
            ),
            Kind::Permission => format!(
                "no permission to write to {table} on {target}: {detail}; grant INSERT on it to \
                 the role pglog logs in as"
            ),
            Kind::NoTable => format!(
                "table {table} does not exist on {target}: {detail}; create it, or let pglog \
                 create it (create_table)"
            ),
            Kind::Shape => format!(
                "cannot insert into table {table} on {target}: {detail}; the table needs pglog's \
                 columns (timestamp timestamptz, level text, event text, func text, scope text, \
                 data jsonb or json): alter it, or log to another table"
            ),
            Kind::Rejected => format!("{table} on {target} refused an event: {detail}"),
        }
    }
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The driver's error, sorted by cause.
fn classify(error: &tokio_postgres::Error) -> Kind {
    if let Some(db) = error.as_db_error() {
        return by_code(db.code());
    }
    if error.is_closed() {
        return Kind::Lost;
    }
    // The driver reports protocol violations, and rustls a certificate that failed
    // verification, only in its message.
    if crate::error::chain(error).contains("invalid peer certificate") {
        return Kind::Untrusted;
    }
    let text = error.to_string();
    if text.contains("unexpected message") || text.contains("error parsing") {
        return Kind::NotPostgres;
    }
    match std::error::Error::source(error).and_then(|s| s.downcast_ref::<std::io::Error>()) {
        Some(io) if io.kind() == std::io::ErrorKind::InvalidData => Kind::NotPostgres,
        _ => Kind::Lost,
    }
}

fn by_code(code: &SqlState) -> Kind {
    let class = &code.code()[..2];
    match code {
        c if *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE => Kind::Timeout,
        c if *c == SqlState::INSUFFICIENT_PRIVILEGE => Kind::Permission,
        c if *c == SqlState::UNDEFINED_TABLE => Kind::NoTable,
        c if *c == SqlState::UNDEFINED_COLUMN || *c == SqlState::DATATYPE_MISMATCH => Kind::Shape,
        c if *c == SqlState::INVALID_CATALOG_NAME => Kind::Login,
        c if *c == SqlState::TOO_MANY_CONNECTIONS
            || *c == SqlState::CANNOT_CONNECT_NOW
            || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            Kind::Refused
        }
        _ if class == "28" => Kind::Login,
        // Operator intervention (shutdown, terminated, idle timeout), connection exceptions.
        _ if class == "57" || class == "08" => Kind::Lost,
        _ => Kind::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sort_into_causes() {
        assert_eq!(by_code(&SqlState::QUERY_CANCELED), Kind::Timeout);
        assert_eq!(by_code(&SqlState::LOCK_NOT_AVAILABLE), Kind::Timeout);
        assert_eq!(by_code(&SqlState::INSUFFICIENT_PRIVILEGE), Kind::Permission);
        assert_eq!(by_code(&SqlState::UNDEFINED_TABLE), Kind::NoTable);
        assert_eq!(by_code(&SqlState::UNDEFINED_COLUMN), Kind::Shape);
        assert_eq!(by_code(&SqlState::INVALID_PASSWORD), Kind::Login);
        assert_eq!(by_code(&SqlState::TOO_MANY_CONNECTIONS), Kind::Refused);
        assert_eq!(by_code(&SqlState::ADMIN_SHUTDOWN), Kind::Lost);
        assert_eq!(by_code(&SqlState::IDLE_SESSION_TIMEOUT), Kind::Lost);
        assert_eq!(by_code(&SqlState::CHECK_VIOLATION), Kind::Rejected);
        assert_eq!(by_code(&SqlState::RAISE_EXCEPTION), Kind::Rejected);
    }

    #[test]
    fn only_a_refused_row_leaves_the_database_up() {
        assert!(!Kind::Rejected.is_outage());
        for kind in [
            Kind::Lost,
            Kind::Timeout,
            Kind::Permission,
            Kind::NoTable,
            Kind::Login,
        ] {
            assert!(kind.is_outage(), "{kind:?}");
        }
    }

    #[test]
    fn notices_name_the_cause_and_the_fix() {
        let t = |kind| Trouble::new(kind, "x").describe("app@db:5432/ops", "\"logs\"");
        assert!(t(Kind::Permission).contains("grant INSERT"));
        assert!(t(Kind::NoTable).contains("does not exist"));
        assert!(t(Kind::Lost).starts_with("lost the connection"));
        assert!(t(Kind::Timeout).contains("locked"));
        assert!(t(Kind::NotPostgres).contains("did not answer as PostgreSQL"));
        assert!(t(Kind::Untrusted).contains("cannot trust"));
        assert!(t(Kind::Login).contains("pg_hba.conf"));
    }
}
