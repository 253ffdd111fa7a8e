//! A guarded HTTP client for downloading media from URLs that arrive in messages (the SSRF guard
//! of wecom-aibot reference §3.5 and §10.3 "connect-time rebind"), with a streaming size cap.
//!
//! The guard has three parts, because each closes a hole the others leave:
//! * a DNS resolver that drops private, loopback, link-local, unique-local, CGNAT, multicast,
//!   documentation and unspecified addresses. The check runs on the addresses the connection will
//!   actually use, so a name that resolves to a public address when validated and to
//!   169.254.169.254 when connecting (DNS rebinding) is still refused;
//! * a literal-IP check on the URL and on every redirect target, since a literal IP host never
//!   reaches the resolver;
//! * no proxy: a proxy would resolve the target itself, out of the resolver's reach.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

/// Default cap for one media download: 20 MiB (the WeCom media limit, aibot §3.5).
pub const DEFAULT_DOWNLOAD_CAP: u64 = 20 * 1024 * 1024;

/// Most redirects followed for one download.
const MAX_REDIRECTS: usize = 5;

/// Why a download failed. Messages name at most the host, never the full URL: media URLs carry
/// signed query parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// Not an absolute `http`/`https` URL.
    #[error("not an http(s) URL")]
    BadUrl,
    /// The host is, or resolves only to, an address in a blocked range.
    #[error("refusing to connect to {host}: private or reserved address")]
    Blocked {
        /// The host name or literal address.
        host: String,
    },
    /// The body is larger than the cap (by `Content-Length` or while streaming).
    #[error("response body exceeds the {cap}-byte cap")]
    TooLarge {
        /// The cap in bytes.
        cap: u64,
    },
    /// The server answered with a non-success status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The request timed out.
    #[error("download timed out")]
    Timeout,
    /// Any other transport failure (text without the URL).
    #[error("download failed: {0}")]
    Http(String),
    /// The HTTP client could not be built.
    #[error("HTTP client setup failed: {0}")]
    Client(String),
}

/// A downloaded body with the headers adapters need to name and type the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The body.
    pub bytes: Vec<u8>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The file name from `Content-Disposition`, reduced to its last path component.
    pub filename: Option<String>,
}

/// A `reqwest::Client` with the SSRF guard installed, from [`guarded_client`].
#[derive(Debug, Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    allow_private: bool,
}

/// The error the resolver and the redirect policy raise for a blocked host; found again in the
/// `reqwest::Error` source chain to report [`DownloadError::Blocked`].
#[derive(Debug)]
struct BlockedHost(String);

impl fmt::Display for BlockedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} has only private or reserved addresses", self.0)
    }
}

impl StdError for BlockedHost {}

/// Resolves with the system resolver (off the runtime threads, via `tokio::net::lookup_host`)
/// and keeps only addresses the guard allows.
#[derive(Debug)]
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept: Vec<SocketAddr> = resolved
                .filter(|addr| allow_private || is_public_ip(addr.ip()))
                .collect();
            if kept.is_empty() {
                tracing::warn!(host = %host, "Blocked a media download to a private address.");
                return Err(Box::new(BlockedHost(host)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Builds the guarded client. With `allow_private` the address checks are off (for tests and
/// for deployments that fetch from an intranet on purpose); the proxy stays off either way.
pub fn guarded_client(
    allow_private: bool,
    timeout: Duration,
) -> Result<GuardedClient, DownloadError> {
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        match check_url(attempt.url(), allow_private) {
            Ok(()) => attempt.follow(),
            Err(UrlProblem::NotHttp) => attempt.error("redirect to a non-http(s) URL"),
            Err(UrlProblem::Blocked(host)) => attempt.error(BlockedHost(host)),
        }
    });
    let client = reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .no_proxy()
        .redirect(policy)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| DownloadError::Client(e.without_url().to_string()))?;
    Ok(GuardedClient {
        client,
        allow_private,
    })
}

impl GuardedClient {
    /// The underlying client (the guard applies to every request made with it, except that
    /// literal-IP URLs are checked only by [`fetch_capped`](Self::fetch_capped)).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Whether private addresses are allowed.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// GETs `url`, streaming the body and aborting once it passes `cap` bytes.
    pub async fn fetch_capped(&self, url: &str, cap: u64) -> Result<Downloaded, DownloadError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| DownloadError::BadUrl)?;
        match check_url(&parsed, self.allow_private) {
            Ok(()) => {}
            Err(UrlProblem::NotHttp) => return Err(DownloadError::BadUrl),
            Err(UrlProblem::Blocked(host)) => return Err(DownloadError::Blocked { host }),
        }
        let mut response = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(map_reqwest_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(DownloadError::Status(status.as_u16()));
        }
        // Refuse early when the server announces an oversized body.
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(DownloadError::TooLarge { cap });
        }
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let filename =
            header(reqwest::header::CONTENT_DISPOSITION).and_then(|d| disposition_filename(&d));
        let initial = response
            .content_length()
            .unwrap_or(0)
            .min(cap)
            .min(1024 * 1024);
        let mut bytes = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(map_reqwest_error)? {
            if bytes.len() as u64 + chunk.len() as u64 > cap {
                return Err(DownloadError::TooLarge { cap });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Downloaded {
            bytes,
            content_type,
            filename,
        })
    }
}

/// GETs `url` with `client` and returns the body, aborting with [`DownloadError::TooLarge`]
/// once it passes `cap` bytes.
pub async fn download_capped(
    client: &GuardedClient,
    url: &str,
    cap: u64,
) -> Result<Vec<u8>, DownloadError> {
    client.fetch_capped(url, cap).await.map(|d| d.bytes)
}

enum UrlProblem {
    NotHttp,
    Blocked(String),
}

/// Scheme must be http(s); a literal-IP host must pass the address check.
fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), UrlProblem> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlProblem::NotHttp);
    }
    let host = url.host_str().ok_or(UrlProblem::NotHttp)?;
    // IPv6 literals come bracketed; the URL parser has already normalised odd IPv4 spellings
    // (`2130706433`, `0x7f.1`) to dotted quads.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        if !allow_private && !is_public_ip(ip) {
            return Err(UrlProblem::Blocked(host.to_owned()));
        }
    }
    Ok(())
}

fn map_reqwest_error(error: reqwest::Error) -> DownloadError {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<BlockedHost>() {
            return DownloadError::Blocked {
                host: blocked.0.clone(),
            };
        }
        source = cause.source();
    }
    if error.is_timeout() {
        return DownloadError::Timeout;
    }
    DownloadError::Http(error.without_url().to_string())
}

/// Extracts the file name from a `Content-Disposition` value: `filename*=UTF-8''…` (RFC 5987)
/// wins over `filename="…"`. Only the last path component is kept.
pub fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for part in value.split(';').map(str::trim) {
        let Some((key, val)) = part.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let encoded = val.trim().splitn(3, '\'').nth(2).unwrap_or("");
                extended = percent_encoding::percent_decode_str(encoded)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned());
            }
            "filename" => plain = Some(val.trim().trim_matches('"').to_owned()),
            _ => {}
        }
    }
    let name = extended.or(plain)?;
    let last = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    (!last.is_empty() && last != "." && last != "..").then(|| last.to_owned())
}

/// True when `ip` is a globally routable unicast address that media may be fetched from.
///
/// Blocked IPv4: 0/8, 10/8, 100.64/10 (CGNAT), 127/8, 169.254/16, 172.16/12, 192.0.0/24,
/// 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4, 240/4.
/// Blocked IPv6: `::`, `::1`, the v4-compatible `::/96`, 100::/64, 2001::/32 (Teredo),
/// 2001:2::/48, 2001:db8::/32, 3fff::/20, fc00::/7, fe80::/10, fec0::/10, ff00::/8, and
/// 64:ff9b:1::/48. IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
/// addresses are judged by the IPv4 address they embed.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let blocked = a == 0
        || a == 10
        || (a == 100 && (64..128).contains(&b))
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224;
    !blocked
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| {
        let [h1, h2] = hi.to_be_bytes();
        let [l1, l2] = lo.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    // IPv4-mapped ::ffff:a.b.c.d
    if seg[..5] == [0; 5] && seg[5] == 0xffff {
        return is_public_v4(embedded_v4(seg[6], seg[7]));
    }
    // ::, ::1 and the deprecated v4-compatible ::a.b.c.d: none is a public destination.
    if seg[..6] == [0; 6] {
        return false;
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded_v4(seg[6], seg[7]));
    }
    // 6to4 2002:V4ADDR::/48.
    if seg[0] == 0x2002 {
        return is_public_v4(embedded_v4(seg[1], seg[2]));
    }
    let blocked = (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local-use NAT64
        || (seg[0] == 0x100 && seg[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo 2001::/32
        || (seg[0] == 0x2001 && seg[1] == 2 && seg[2] == 0) // benchmarking 2001:2::/48
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] & 0xfff0 == 0x3ff0) // documentation 3fff::/20
        || (seg[0] & 0xfe00 == 0xfc00) // unique local fc00::/7
        || (seg[0] & 0xffc0 == 0xfe80) // link-local fe80::/10
        || (seg[0] & 0xffc0 == 0xfec0) // site-local fec0::/10 (deprecated)
        || (seg[0] & 0xff00 == 0xff00); // multicast
    !blocked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classifier_table() {
        let table: &[(&str, bool)] = &[
            // IPv4 public
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("101.226.103.106", true),
            ("172.32.0.1", true),
            ("100.128.0.1", true),
            ("169.255.0.1", true),
            ("192.0.3.1", true),
            ("223.255.255.255", true),
            // IPv4 blocked
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("10.1.2.3", false),
            ("100.64.0.1", false),
            ("100.127.255.255", false),
            ("127.0.0.1", false),
            ("127.255.0.9", false),
            ("169.254.169.254", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("192.88.99.1", false),
            ("192.168.1.1", false),
            ("198.18.0.1", false),
            ("198.19.255.1", false),
            ("198.51.100.7", false),
            ("203.0.113.9", false),
            ("224.0.0.1", false),
            ("239.255.255.250", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            // IPv6 public
            ("2400:cb00::1", true),
            ("2606:4700:4700::1111", true),
            ("2001:4860:4860::8888", true),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::808:808", true),
            ("2002:808:808::1", true),
            // IPv6 blocked
            ("::", false),
            ("::1", false),
            ("::127.0.0.1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("::ffff:100.64.1.1", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("64:ff9b:1::1", false),
            ("2002:a00:1::1", false),
            ("2002:7f00:1::", false),
            ("100::1", false),
            ("2001::1", false),
            ("2001:2::1", false),
            ("2001:db8::1", false),
            ("3fff::1", false),
            ("fc00::1", false),
            ("fd12:3456::1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("ff0e::1", false),
        ];
        for (addr, public) in table {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(is_public_ip(ip), *public, "{addr}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_in_every_spelling() {
        let blocked = [
            "http://127.0.0.1/x",
            "http://[::1]:8080/x",
            "http://[::ffff:7f00:1]/x",
            "https://169.254.169.254/latest/meta-data",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://10.0.0.1:9000/",
        ];
        for url in blocked {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert!(
                matches!(check_url(&parsed, false), Err(UrlProblem::Blocked(_))),
                "{url}"
            );
            assert!(check_url(&parsed, true).is_ok(), "{url} with allow_private");
        }
        for url in [
            "https://8.8.8.8/",
            "https://example.com/a.png",
            "http://[2606:4700::1]/",
        ] {
            assert!(
                check_url(&reqwest::Url::parse(url).unwrap(), false).is_ok(),
                "{url}"
            );
        }
        for url in [
            "file:///etc/passwd",
            "ftp://example.com/x",
            "data:text/plain,hi",
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert!(
                matches!(check_url(&parsed, true), Err(UrlProblem::NotHttp)),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn resolver_drops_private_answers() {
        let guarded = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().unwrap();
        let err = guarded
            .resolve(name)
            .await
            .err()
            .expect("localhost is blocked");
        assert!(err.downcast_ref::<BlockedHost>().is_some());
        let open = GuardedResolver {
            allow_private: true,
        };
        let addrs: Vec<_> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    #[test]
    fn disposition_file_names() {
        assert_eq!(
            disposition_filename("attachment; filename=\"a b.pdf\"").as_deref(),
            Some("a b.pdf")
        );
        assert_eq!(
            disposition_filename(
                "attachment; filename=\"x.pdf\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf"
            )
            .as_deref(),
            Some("报告.pdf")
        );
        assert_eq!(
            disposition_filename("attachment; filename=../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            disposition_filename("attachment; filename=\"..\\\\..\\\\x.exe\"").as_deref(),
            Some("x.exe")
        );
        assert_eq!(disposition_filename("attachment; filename=\"..\""), None);
        assert_eq!(disposition_filename("inline"), None);
    }
}
