//! `so1s-probe URL`: the container health check. GETs an `http://` URL and exits 0 if the
//! answer is 2xx, 1 otherwise (the reason on stderr).
//!
//! Inference images are built `FROM scratch`: there is no shell or curl to run a health
//! check with, so the image carries this probe. It uses the standard library only (a few
//! hundred kB, no libtorch) so Docker can run it every few seconds for next to nothing.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: so1s-probe http://HOST:PORT/PATH");
        return ExitCode::from(2);
    };
    match probe(&url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("{url}: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `http://host:port/path` into the address and the path.
fn parse(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are probed")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("the URL names no host".into());
    }
    Ok((authority, path))
}

fn probe(url: &str) -> Result<(), String> {
    let (authority, path) = parse(url)?;
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let address = address
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the host resolves to nothing")?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    // One write: the server may answer (and close) as soon as the request is complete.
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: so1s-probe\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    status_ok(&head[..n])
}

/// Whether an HTTP status line says 2xx.
fn status_ok(head: &[u8]) -> Result<(), String> {
    let line = String::from_utf8_lossy(head);
    let status = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
    if status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            parse("http://127.0.0.1:8080/readyz").unwrap(),
            ("127.0.0.1:8080", "/readyz")
        );
        assert_eq!(parse("http://localhost").unwrap(), ("localhost", "/"));
        assert!(parse("https://127.0.0.1/readyz").is_err());
        assert!(parse("http:///readyz").is_err());
    }

    #[test]
    fn only_2xx_is_healthy() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n").is_ok());
        assert!(status_ok(b"HTTP/1.0 204 No Content\r\n").is_ok());
        assert_eq!(
            status_ok(b"HTTP/1.1 503 Service Unavailable\r\n").unwrap_err(),
            "answered 503"
        );
        assert!(status_ok(b"garbage").is_err());
    }

    #[test]
    fn probes_a_real_listener() {
        use std::net::TcpListener;
        for (answer, healthy) in [("HTTP/1.1 200 OK", true), ("HTTP/1.1 503 Nope", false)] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/readyz", listener.local_addr().unwrap());
            let server = std::thread::spawn(move || {
                let (mut socket, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 512];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = socket.read(&mut buffer).unwrap();
                    assert!(n > 0, "the request ended early");
                    request.extend_from_slice(&buffer[..n]);
                }
                socket
                    .write_all(format!("{answer}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .unwrap();
                String::from_utf8_lossy(&request).into_owned()
            });
            assert_eq!(probe(&url).is_ok(), healthy, "{answer}");
            assert!(server
                .join()
                .unwrap()
                .starts_with("GET /readyz HTTP/1.0\r\n"));
        }
        // Nothing listening: unhealthy, with the reason.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(probe(&format!("http://127.0.0.1:{port}/readyz")).is_err());
    }
}
