//! Many long-lived TCP connections, in a process of their own: a process may hold at
//! most `RLIMIT_NOFILE` descriptors (20,000 here, and tests may not raise the hard
//! limit), so tests that hold 10,000 connections run each side of them as one of these
//! (tests/tests/flood_e2e.rs), started inside a lab namespace.
//!
//! - `xlb-hold serve ID ADDR`: accepts on ADDR; greets each connection with `ID\n`,
//!   reads it to EOF, closes (a thread per connection).
//! - `xlb-hold hold ADDR N`: opens N connections to ADDR, prints one JSON line with how
//!   many each backend greeted, then waits for a line on stdin; then sends a line on
//!   each connection, half-closes it and reads it to EOF (a backend that did not accept
//!   it answers with a reset), and prints one JSON line with the connections that broke.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", id, addr] => serve(id, addr.parse().expect("ADDR")),
        ["hold", addr, n] => hold(addr.parse().expect("ADDR"), n.parse().expect("N")),
        _ => {
            eprintln!("usage: xlb-hold serve ID ADDR | xlb-hold hold ADDR N");
            std::process::exit(2);
        }
    }
}

fn serve(id: &str, addr: SocketAddr) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let greeting = format!("{id}\n");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            // Out of descriptors or an aborted handshake: keep serving.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let greeting = greeting.clone();
        std::thread::spawn(move || {
            let _ = stream.write_all(greeting.as_bytes());
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        });
    }
}

fn hold(addr: SocketAddr, n: usize) {
    let mut held = Vec::with_capacity(n);
    let mut greeted: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        BufReader::new(&s)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("greeting of connection {i}: {e}"));
        let id = line.trim().to_owned();
        *greeted.entry(id.clone()).or_default() += 1;
        held.push((id, s));
    }
    println!("{}", serde_json::json!({ "greeted": greeted }));
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("stdin");
    let broken: Vec<serde_json::Value> = held
        .into_iter()
        .enumerate()
        .filter_map(|(i, (id, s))| {
            testbed::lab::finish(s)
                .err()
                .map(|e| serde_json::json!({ "connection": i, "backend": id, "error": e }))
        })
        .collect();
    println!("{}", serde_json::json!({ "broken": broken }));
}
