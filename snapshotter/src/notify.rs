//! Readiness for systemd's `Type=notify`: one datagram to `$NOTIFY_SOCKET`
//! (sd_notify(3)), sent once recovery is done and the socket serves.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;

/// Tells systemd the daemon is ready, when it runs under systemd. Returns
/// whether a notification was sent.
pub fn ready() -> std::io::Result<bool> {
    send_env("READY=1\nSTATUS=serving\n")
}

/// Tells systemd the daemon is stopping.
pub fn stopping() -> std::io::Result<bool> {
    send_env("STOPPING=1\n")
}

fn send_env(message: &str) -> std::io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => send(&socket, message).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `message` to the notify socket `path` (`@name` for an abstract one).
pub fn send(path: &OsStr, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = path.as_encoded_bytes().strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_reach_path_and_abstract_notify_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        super::send(path.as_os_str(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("pare-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        super::send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1\n").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }
}
