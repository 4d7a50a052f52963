//! `tasks-server probe URL` and `tasks-server round-trip BASE_URL`: HTTP checks for
//! shell-less images (Helm tests, Docker health checks). Plain HTTP/1.1 over TCP, one
//! request per connection, is all a check inside the cluster needs, so no HTTP client
//! library is pulled into the image for it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail, ensure};

/// The largest response a check reads; health and task documents are far smaller.
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// A response: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// GETs `url` (`http://host[:port][/path]`); returns the status code.
pub fn get(url: &str, timeout: Duration) -> anyhow::Result<u16> {
    let anonymous = Caller {
        bearer: None,
        timeout,
    };
    Ok(anonymous.request("GET", url, None)?.status)
}

/// Who sends the requests of a check, and how long each may take.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The API token (or JWT) sent as `Authorization: Bearer`; never printed.
    pub bearer: Option<&'a str>,
    /// Bound on connecting, sending and reading each request.
    pub timeout: Duration,
}

impl Caller<'_> {
    fn request(
        &self,
        method: &str,
        url: &str,
        json: Option<&serde_json::Value>,
    ) -> anyhow::Result<Response> {
        request(method, url, json, self.bearer, self.timeout)
    }
}

/// Sends one request with `Connection: close` and reads the whole response.
fn request(
    method: &str,
    url: &str,
    json: Option<&serde_json::Value>,
    bearer: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    if authority.is_empty() {
        bail!("{url}: missing host");
    }
    let address = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let target = address
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {address}"))?
        .next()
        .with_context(|| format!("{address} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("cannot connect to {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = json.map(serde_json::Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: tasks-server-probe\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    if let Some(token) = bearer {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if json.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;

    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the response of {method} {url}"))?;
    parse(&raw).with_context(|| format!("not an HTTP response from {method} {url}"))
}

fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("incomplete response head")?;
    let head = std::str::from_utf8(&raw[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .context("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    response.body = if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        ensure!(rest.len() >= size + 2, "truncated chunk");
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Creates a task through the API at `base` (`http://host:port`), reads it back, deletes
/// it and checks that it is gone: the Helm test's proof that the Service, the pods and the
/// database work together. Returns the id of the task it created and removed.
pub fn round_trip(base: &str, caller: Caller<'_>) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let title = "helm test round trip";
    let created = caller.request(
        "POST",
        &format!("{base}/v1/tasks"),
        Some(&serde_json::json!({
            "title": title,
            "description": "created and deleted by `tasks-server round-trip`",
        })),
    )?;
    ensure!(
        created.status == 201,
        "POST /v1/tasks answered {}, not 201: {}",
        created.status,
        String::from_utf8_lossy(&created.body)
    );
    let task: serde_json::Value =
        serde_json::from_slice(&created.body).context("POST /v1/tasks: body is not JSON")?;
    let id = task
        .get("id")
        .and_then(serde_json::Value::as_str)
        .context("POST /v1/tasks: no id in the created task")?
        .to_owned();
    let url = format!("{base}/v1/tasks/{id}");
    let checked = read_back_and_delete(caller, &url, &id, title);
    if checked.is_err() {
        // The check ran against a live database: never leave its task behind.
        let _ = caller.request("DELETE", &url, None);
    }
    checked.map(|()| id)
}

fn read_back_and_delete(
    caller: Caller<'_>,
    url: &str,
    id: &str,
    title: &str,
) -> anyhow::Result<()> {
    let read = caller.request("GET", url, None)?;
    ensure!(
        read.status == 200,
        "GET /v1/tasks/{id} answered {}, not 200",
        read.status
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&read.body).context("GET: body is not JSON")?;
    ensure!(
        stored.get("title").and_then(serde_json::Value::as_str) == Some(title),
        "GET /v1/tasks/{id} returned another task: {stored}"
    );

    let deleted = caller.request("DELETE", url, None)?;
    ensure!(
        deleted.status == 204,
        "DELETE /v1/tasks/{id} answered {}, not 204",
        deleted.status
    );
    let gone = caller.request("GET", url, None)?;
    ensure!(
        gone.status == 404,
        "GET /v1/tasks/{id} after DELETE answered {}, not 404",
        gone.status
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sized_response() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let response = parse(raw).expect("parses");
        assert_eq!(response.status, 201);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.body, b"{}");
    }

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        let response = parse(raw).expect("parses");
        assert_eq!(response.body, b"{\"a\":1}");
    }

    /// A stand-in API: creates fine, then fails the read-back with 500, and records the
    /// request lines it saw.
    fn api_failing_the_read_back() -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (seen, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(3) {
                let mut stream = stream.expect("accept");
                // Read the whole request (head and body) before answering, so closing the
                // socket never resets a client that is still sending.
                let mut raw = Vec::new();
                let mut buf = [0_u8; 4096];
                let complete = |raw: &[u8]| {
                    let text = String::from_utf8_lossy(raw);
                    text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|n| n.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        body.len() >= length
                    })
                };
                while !complete(&raw) {
                    let n = stream.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&raw).into_owned();
                let line = head.lines().next().unwrap_or_default().to_owned();
                let body = if line.starts_with("POST") {
                    "HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\n{\"id\":\"x\"}"
                } else {
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
                };
                stream.write_all(body.as_bytes()).expect("write");
                seen.send(line).expect("record");
            }
        });
        (base, lines)
    }

    #[test]
    fn a_failed_round_trip_deletes_the_task_it_created() {
        let (base, lines) = api_failing_the_read_back();
        let caller = Caller {
            bearer: Some("tkn_test"),
            timeout: Duration::from_secs(5),
        };
        let error = round_trip(&base, caller).expect_err("the read-back fails");
        assert!(
            error.to_string().contains("GET /v1/tasks/x answered 500"),
            "{error:#}"
        );
        let seen: Vec<String> = lines.iter().take(3).collect();
        assert_eq!(
            seen.iter()
                .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>(),
            ["POST /v1/tasks", "GET /v1/tasks/x", "DELETE /v1/tasks/x"],
        );
    }

    #[test]
    fn rejects_what_is_not_http() {
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
