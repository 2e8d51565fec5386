//! Runs the real `smista` binary for process-level tests (signals, crashes).
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A `smista serve` child process on ephemeral ports, killed when dropped.
pub struct Smista {
    /// The process.
    pub child: Child,
    /// Its gRPC address.
    pub grpc: String,
    /// Its log lines, read so far and to come.
    pub log: Receiver<String>,
    /// The lines read before the start-up line, and it.
    pub startup: Vec<String>,
}

impl Smista {
    /// Starts `smista serve` with `args` (after the listen addresses) and waits for its start-up
    /// line.
    pub fn start(args: &[&std::ffi::OsStr]) -> Smista {
        Self::start_with_env(args, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_with_env(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Smista {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smista"))
            .args(["serve", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smista serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut startup = Vec::new();
        let grpc = loop {
            let line = log.recv_timeout(Duration::from_secs(30)).expect("start-up line");
            startup.push(line.clone());
            if let Some(rest) = line.split("grpc=").nth(1) {
                break rest.split_whitespace().next().expect("address").to_owned();
            }
        };
        Smista { child, grpc, log, startup }
    }

    /// A connected channel.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }
}

impl Drop for Smista {
    /// A failing assertion must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
