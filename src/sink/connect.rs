//! Opening a connection as libpq does (hosts in order, each within the connect timeout),
//! with every step bounded: name lookup, TCP or Unix-socket connect, TLS, startup,
//! authentication, and the `target_session_attrs` check.
//!
//! The driver bounds only the socket connect; a peer that accepts and then says nothing
//! (a frozen server, a black-holed network, something that is not PostgreSQL) would hold
//! its startup forever. So pglog opens the socket itself, with TCP keepalives on, and
//! hands it to the driver's `connect_raw` under a timer.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio::runtime::Runtime;
use tokio_postgres::config::SslMode;
use tokio_postgres::config::{Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, CancelToken, Client, Config, SimpleQueryMessage};

use super::trouble::{Kind, Trouble};
use crate::dsn::{For, Password};
use crate::tls::Transport;

/// A byte stream to the server: what the driver speaks PostgreSQL over.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One place a session can be opened: where, and the name TLS verifies.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    place: Place,
    /// The host name as written, for TLS's server name check (none over a Unix socket).
    #[cfg_attr(not(feature = "tls-rustls"), allow(dead_code))]
    tls_name: Option<String>,
    /// The host as written (name, address or socket directory) and the port: what the
    /// password file is matched against.
    host: String,
    port: u16,
}

#[derive(Debug, Clone)]
enum Place {
    Tcp(SocketAddr),
    /// The socket file itself (`<dir>/.s.PGSQL.<port>`).
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.place {
            Place::Tcp(addr) => write!(f, "{addr}"),
            Place::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// TCP keepalive settings, as the DSN or pglog's defaults give them.
#[derive(Debug, Clone)]
struct Keepalive {
    on: bool,
    idle: Duration,
    interval: Option<Duration>,
    retries: Option<u32>,
    user_timeout: Option<Duration>,
}

impl Address {
    /// Opens the socket, at most `limit`.
    async fn open(&self, keepalive: &Keepalive, limit: Duration) -> io::Result<Stream> {
        let connect = async {
            match &self.place {
                Place::Tcp(addr) => {
                    let socket = if addr.is_ipv4() {
                        TcpSocket::new_v4()?
                    } else {
                        TcpSocket::new_v6()?
                    };
                    tune(&socket, keepalive)?;
                    let stream = socket.connect(*addr).await?;
                    stream.set_nodelay(true)?;
                    Ok(Stream::Tcp(stream))
                }
                Place::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
            }
        };
        tokio::time::timeout(limit, connect)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer to the connection attempt within {limit:?}"),
                ))
            })
    }
}

/// Keepalives let the kernel notice a dead peer on an idle session; the user timeout
/// bounds how long sent data may go unacknowledged.
fn tune(socket: &TcpSocket, keepalive: &Keepalive) -> io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    if keepalive.on {
        let mut params = socket2::TcpKeepalive::new().with_time(keepalive.idle);
        if let Some(interval) = keepalive.interval {
            params = params.with_interval(interval);
        }
        #[cfg(not(any(target_os = "windows", target_os = "openbsd")))]
        if let Some(retries) = keepalive.retries {
            params = params.with_retries(retries);
        }
        sock.set_tcp_keepalive(&params)?;
    }
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    if let Some(timeout) = keepalive.user_timeout {
        sock.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(())
}

/// The driver's connection, polled alongside every request: it does the actual I/O.
pub(crate) trait Drive: Send {
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>>;
}

impl<S, T> Drive for tokio_postgres::Connection<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>> {
        tokio_postgres::Connection::poll_message(self, cx)
    }
}

/// What a server notice is handed to (its warnings are worth telling the operator).
pub(crate) type NoticeHandler = dyn Fn(&DbError) + Send + Sync;

/// Why [`drive`] stopped before its request finished.
#[derive(Debug)]
pub(crate) enum Broken {
    /// The driver reported an error, or the server closed the connection.
    Connection(Option<tokio_postgres::Error>),
}

/// Polls `request` and the connection until the request finishes or the connection
/// breaks. No bound of its own: callers put a timer around it.
pub(crate) async fn drive<T>(
    driver: &mut dyn Drive,
    on_notice: &NoticeHandler,
    request: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<Result<T, tokio_postgres::Error>, Broken> {
    let mut request = std::pin::pin!(request);
    std::future::poll_fn(|cx| {
        loop {
            match driver.poll_message(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => on_notice(&notice),
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Broken::Connection(Some(e)))),
                // Closed: a pending request can no longer be answered. Let it report
                // first if it already has its answer.
                Poll::Ready(None) => {
                    return match request.as_mut().poll(cx) {
                        Poll::Ready(result) => Poll::Ready(Ok(result)),
                        Poll::Pending => Poll::Ready(Err(Broken::Connection(None))),
                    }
                }
                Poll::Pending => break,
            }
        }
        request.as_mut().poll(cx).map(Ok)
    })
    .await
}

/// A freshly opened connection.
pub(crate) struct Opened {
    pub client: Client,
    pub driver: Box<dyn Drive>,
    /// Where it went: cancel requests go there too.
    pub address: Address,
}

/// How to open sessions: the driver configuration, the password and the transport.
pub(crate) struct Endpoint {
    /// Without a password: that is looked up for each connection.
    config: Config,
    password: Password,
    transport: Transport,
    /// How TLS checks the server, for the message when it refuses its certificate.
    tls_checks: String,
    /// Per address, as libpq's `connect_timeout`.
    limit: Duration,
    keepalive: Keepalive,
    /// The index (in [`Endpoint::hosts`]' order) of the host that answered last.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The driver configuration holds the password: never print it.
        f.debug_struct("Endpoint")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn new(
        config: Config,
        password: Password,
        transport: Transport,
        tls_checks: String,
        limit: Duration,
    ) -> Endpoint {
        let keepalive = Keepalive {
            on: config.get_keepalives(),
            idle: config.get_keepalives_idle(),
            interval: config.get_keepalives_interval(),
            retries: config.get_keepalives_retries(),
            user_timeout: config.get_tcp_user_timeout().copied(),
        };
        Endpoint {
            config,
            password,
            transport,
            tls_checks,
            limit,
            keepalive,
            preferred: AtomicUsize::new(usize::MAX),
        }
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.config.get_ssl_mode()
    }

    /// The longest one connection attempt may take.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Opens a connection on the first address that answers as the configuration asks,
    /// trying each within the connect timeout; the error is the last address's.
    pub fn open(&self, rt: &Runtime, on_notice: &NoticeHandler) -> Result<Opened, Trouble> {
        let mut last = None;
        let mut hosts = self.hosts();
        // The host that answered last goes first (unless hosts are to be tried at
        // random): a frozen first host of a multi-host DSN then costs one connect
        // timeout, not one per session.
        let preferred = self.preferred.load(Ordering::Relaxed);
        let random = self.config.get_load_balance_hosts() == LoadBalanceHosts::Random;
        if let Some(at) = hosts
            .iter()
            .position(|(i, ..)| *i == preferred)
            .filter(|_| !random)
        {
            hosts[..=at].rotate_right(1);
        }
        for (index, host, port) in hosts {
            let addresses = match resolve(&host, port, self.limit) {
                Ok(addresses) => addresses,
                Err(e) => {
                    last = Some(Trouble::new(
                        Kind::Unreachable,
                        format!("cannot resolve {}: {e}", host_text(&host)),
                    ));
                    continue;
                }
            };
            for address in addresses {
                match rt.block_on(self.open_one(&address, on_notice)) {
                    Ok(opened) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(opened);
                    }
                    // As libpq: a server that refused the login is the answer; other
                    // hosts are not tried with the same credentials.
                    Err(trouble) if trouble.kind == Kind::Login => return Err(trouble),
                    Err(trouble) => last = Some(trouble),
                }
            }
        }
        Err(last.unwrap_or_else(|| Trouble::new(Kind::Unreachable, "no host to connect to")))
    }

    /// Hosts in the order to try, each with its index in the DSN and its port (libpq's
    /// pairing rules).
    fn hosts(&self) -> Vec<(usize, Target, u16)> {
        let config = &self.config;
        let (hosts, addrs, ports) = (
            config.get_hosts(),
            config.get_hostaddrs(),
            config.get_ports(),
        );
        let count = hosts.len().max(addrs.len());
        let mut order: Vec<usize> = (0..count).collect();
        if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
            shuffle(&mut order);
        }
        order
            .into_iter()
            .map(|i| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                let target = match (hosts.get(i), addrs.get(i)) {
                    // `hostaddr` is where to connect, `host` the name TLS checks.
                    (host, Some(ip)) => Target::Ip(
                        *ip,
                        match host {
                            Some(Host::Tcp(name)) => Some(name.clone()),
                            _ => None,
                        },
                    ),
                    (Some(Host::Tcp(name)), None) => Target::Name(name.clone()),
                    (Some(Host::Unix(dir)), None) => Target::Unix(dir.clone()),
                    (None, None) => Target::Unix(PathBuf::from("/tmp")),
                };
                (i, target, port)
            })
            .collect()
    }

    async fn open_one(
        &self,
        address: &Address,
        on_notice: &NoticeHandler,
    ) -> Result<Opened, Trouble> {
        let limit = self.limit;
        let attempt = async {
            let stream = address
                .open(&self.keepalive, limit)
                .await
                .map_err(|e| Trouble::new(Kind::Unreachable, format!("{address}: {e}")))?;
            let (client, driver) = self.handshake(stream, address).await?;
            let mut opened = Opened {
                client,
                driver,
                address: address.clone(),
            };
            self.check_session_attrs(&mut opened, on_notice).await?;
            Ok(opened)
        };
        tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Trouble::new(
                    Kind::Silent,
                    format!(
                    "{address} accepted the connection but did not answer as PostgreSQL within \
                     {limit:?} (a frozen server, a black-holed network, or not a PostgreSQL server)"
                ),
                ))
            })
    }

    /// TLS as `sslmode` asks, then startup and authentication with the password as it
    /// is now.
    async fn handshake(
        &self,
        stream: Stream,
        address: &Address,
    ) -> Result<(Client, Box<dyn Drive>), Trouble> {
        let mut config = self.config_for(address);
        let failed = |e: tokio_postgres::Error| self.explain(Trouble::from_connect(&e, address));
        // libpq never uses TLS over a Unix socket, also when other hosts of the DSN do.
        let local = matches!(address.place, Place::Unix(_));
        if local && config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable {
            config
                .to_mut()
                .ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        match &self.transport {
            #[cfg(feature = "tls-rustls")]
            Transport::Rustls(make) if !local => {
                use tokio_postgres::tls::MakeTlsConnect;
                let tls = MakeTlsConnect::<Stream>::make_tls_connect(
                    &mut make.clone(),
                    address.tls_name.as_deref().unwrap_or(""),
                )
                .map_err(|e| {
                    Trouble::new(
                        Kind::Unreachable,
                        format!("cannot set up TLS for {address}: {e}"),
                    )
                })?;
                let (client, connection) = config.connect_raw(stream, tls).await.map_err(failed)?;
                Ok((client, Box::new(connection)))
            }
            _ => {
                let (client, connection) = config
                    .connect_raw(stream, tokio_postgres::NoTls)
                    .await
                    .map_err(failed)?;
                Ok((client, Box::new(connection)))
            }
        }
    }

    /// The driver configuration for a connection to `address`, with the password the
    /// DSN, the environment or the password file gives now.
    fn config_for(&self, address: &Address) -> std::borrow::Cow<'_, Config> {
        let user = self.config.get_user().unwrap_or_default();
        let to = For {
            host: &address.host,
            port: address.port,
            dbname: self.config.get_dbname().unwrap_or(user),
            user,
        };
        match self.password.lookup(to) {
            Some(password) => {
                let mut config = self.config.clone();
                config.password(password);
                std::borrow::Cow::Owned(config)
            }
            None => std::borrow::Cow::Borrowed(&self.config),
        }
    }

    /// Adds what the operator needs to know to a failed connect: how TLS checked the
    /// certificate it refused, why no password may have been sent.
    fn explain(&self, mut trouble: Trouble) -> Trouble {
        if trouble.kind == Kind::Untrusted {
            trouble.detail = format!(
                "{}; the server's certificate was checked as {}",
                trouble.detail, self.tls_checks
            );
        }
        if trouble.kind == Kind::Login && trouble.detail.contains("none was found") {
            trouble.detail = format!(
                "{} (looked in {})",
                trouble.detail,
                self.password.searched()
            );
        }
        if trouble.kind == Kind::Login && trouble.detail.contains("password") {
            if let Some(hint) = self.password.hint() {
                trouble.detail = format!("{}; {hint}", trouble.detail);
            }
        }
        if trouble.kind == Kind::Login && trouble.detail.contains("client certificate") {
            trouble.detail = format!(
                "{}; give pglog one: sslcert and sslkey in the DSN, PGSSLCERT and PGSSLKEY, \
                 or ~/.postgresql/postgresql.crt and .key",
                trouble.detail
            );
        }
        trouble
    }

    /// libpq's `target_session_attrs`: a standby is skipped when writes are wanted.
    async fn check_session_attrs(
        &self,
        opened: &mut Opened,
        on_notice: &NoticeHandler,
    ) -> Result<(), Trouble> {
        let wanted = self.config.get_target_session_attrs();
        if wanted == TargetSessionAttrs::Any {
            return Ok(());
        }
        let address = &opened.address;
        let messages = drive(
            &mut *opened.driver,
            on_notice,
            opened.client.simple_query("SHOW transaction_read_only"),
        )
        .await
        .map_err(|_| Trouble::new(Kind::Lost, format!("{address} closed the connection")))?
        .map_err(|e| Trouble::from_connect(&e, address))?;
        let read_only = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "on"),
            _ => None,
        });
        let fits = match wanted {
            TargetSessionAttrs::ReadWrite => read_only == Some(false),
            TargetSessionAttrs::ReadOnly => read_only == Some(true),
            _ => true,
        };
        if fits {
            Ok(())
        } else {
            Err(Trouble::new(
                Kind::Refused,
                format!("{address} does not fit target_session_attrs ({wanted:?})"),
            ))
        }
    }

    /// Opens a fresh socket to `address` and sends a cancel request for `token`'s
    /// running statement, at most `limit`. Best effort: the server does not answer.
    pub async fn cancel(&self, token: &CancelToken, address: &Address, limit: Duration) {
        let attempt = async {
            let Ok(stream) = address.open(&self.keepalive, limit).await else {
                return;
            };
            match &self.transport {
                Transport::Plain => {
                    let _ = token.cancel_query_raw(stream, tokio_postgres::NoTls).await;
                }
                #[cfg(feature = "tls-rustls")]
                Transport::Rustls(make) => {
                    use tokio_postgres::tls::MakeTlsConnect;
                    let Ok(tls) = MakeTlsConnect::<Stream>::make_tls_connect(
                        &mut make.clone(),
                        address.tls_name.as_deref().unwrap_or(""),
                    );
                    let _ = token.cancel_query_raw(stream, tls).await;
                }
            }
        };
        let _ = tokio::time::timeout(limit, attempt).await;
    }
}

/// A host entry before name lookup.
enum Target {
    Name(String),
    Ip(IpAddr, Option<String>),
    Unix(PathBuf),
}

fn host_text(target: &Target) -> String {
    match target {
        Target::Name(name) => name.clone(),
        Target::Ip(ip, _) => ip.to_string(),
        Target::Unix(dir) => dir.display().to_string(),
    }
}

/// The addresses of a host, looked up at most `limit` (a hung resolver is left behind
/// on its own thread rather than waited for).
fn resolve(target: &Target, port: u16, limit: Duration) -> io::Result<Vec<Address>> {
    match target {
        Target::Unix(dir) => Ok(vec![Address {
            place: Place::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            tls_name: None,
            host: dir.display().to_string(),
            port,
        }]),
        Target::Ip(ip, name) => {
            let written = name.clone().unwrap_or_else(|| ip.to_string());
            Ok(vec![Address {
                place: Place::Tcp(SocketAddr::new(*ip, port)),
                tls_name: Some(written.clone()),
                host: written,
                port,
            }])
        }
        Target::Name(name) => {
            let tcp = |addr| Address {
                place: Place::Tcp(addr),
                tls_name: Some(name.clone()),
                host: name.clone(),
                port,
            };
            if let Ok(ip) = name.parse::<IpAddr>() {
                return Ok(vec![tcp(SocketAddr::new(ip, port))]);
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let host = name.clone();
            std::thread::Builder::new()
                .name("pglog-resolve".to_owned())
                .spawn(move || {
                    let _ = tx.send((host.as_str(), port).to_socket_addrs().map(Vec::from_iter));
                })?;
            let found = rx.recv_timeout(limit).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from the name resolver within {limit:?}"),
                )
            })??;
            if found.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no address found"));
            }
            Ok(found.into_iter().map(tcp).collect())
        }
    }
}

/// Orders hosts randomly for `load_balance_hosts=random`; std's hasher seeds suffice.
fn shuffle(items: &mut [usize]) {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    for i in (1..items.len()).rev() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        let j = (hasher.finish() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(dsn: &str) -> Endpoint {
        Endpoint::new(
            dsn.parse().unwrap(),
            Password::none(),
            Transport::Plain,
            String::new(),
            Duration::from_secs(1),
        )
    }

    fn shown(endpoint: &Endpoint) -> Vec<String> {
        endpoint
            .hosts()
            .iter()
            .map(|(_, target, port)| format!("{}:{port}", host_text(target)))
            .collect()
    }

    #[test]
    fn hosts_pair_with_ports_as_in_libpq() {
        assert_eq!(
            shown(&endpoint("host=a,b,c port=1,2,3")),
            ["a:1", "b:2", "c:3"]
        );
        assert_eq!(shown(&endpoint("host=a,b port=7")), ["a:7", "b:7"]);
        assert_eq!(shown(&endpoint("host=/run/pg")), ["/run/pg:5432"]);
        assert_eq!(
            shown(&endpoint("host=db.example hostaddr=10.0.0.1")),
            ["10.0.0.1:5432"]
        );
    }

    #[test]
    fn unix_sockets_are_files_in_the_directory() {
        let addresses = resolve(
            &Target::Unix("/run/pg".into()),
            5433,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(addresses[0].to_string(), "/run/pg/.s.PGSQL.5433");
        assert!(addresses[0].tls_name.is_none());
    }

    #[test]
    fn hostaddr_connects_there_and_verifies_the_host_name() {
        let target = Target::Ip("10.0.0.1".parse().unwrap(), Some("db.example".into()));
        let addresses = resolve(&target, 5432, Duration::from_secs(1)).unwrap();
        assert_eq!(addresses[0].to_string(), "10.0.0.1:5432");
        assert_eq!(addresses[0].tls_name.as_deref(), Some("db.example"));
    }

    #[test]
    fn shuffling_keeps_every_host() {
        let mut items: Vec<usize> = (0..10).collect();
        shuffle(&mut items);
        items.sort_unstable();
        assert_eq!(items, (0..10).collect::<Vec<_>>());
    }
}
