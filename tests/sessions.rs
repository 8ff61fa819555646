//! Sessions that survive the network: resume, idempotent resends, slow readers, limits, grace, shutdown.

mod common;

use std::time::Duration;

use common::{http_get, TestServer, WAIT};
use convene_signaling::{
    Command, ErrorCode, LeaveReason, Presence, Role, RoomEvent, ServerMessage,
};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn chat_texts(messages: &[ServerMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Event {
                event: RoomEvent::ChatMessage { message },
                ..
            } => Some(message.text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn dropped_socket_resumes_with_exactly_the_missed_events_in_order() {
    let t = TestServer::start().await;
    let mut host = t.join("r", Role::Host, "host").await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let mut ben = t.join("r", Role::Participant, "ben").await;
    ana.ok(Command::SendChat {
        text: "before".into(),
    })
    .await;
    ben.expect_event(|e| matches!(e, RoomEvent::ChatMessage { .. }))
        .await;
    // Wi-Fi drops: no close frame.
    let (token, session_id, last_seq) = ben.drop_connection();
    host.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "ben" && member.presence == Presence::Reconnecting)).await;
    for i in 0..5 {
        ana.ok(Command::SendChat {
            text: format!("missed {i}"),
        })
        .await;
    }
    // Staff-only events (another participant's hand) must not be replayed to ben.
    let mut cleo = t.join("r", Role::Participant, "cleo").await;
    cleo.ok(Command::RaiseHand).await;
    let (mut ben, first) = t.resume(&token, &session_id, last_seq).await;
    match first {
        ServerMessage::Resumed { last_seq: from, .. } => assert_eq!(from, last_seq),
        other => panic!("expected resumed, got {other:?}"),
    }
    let replayed = ben.drain(Duration::from_millis(500)).await;
    assert_eq!(
        chat_texts(&replayed),
        (0..5).map(|i| format!("missed {i}")).collect::<Vec<_>>()
    );
    assert!(
        replayed.iter().all(|m| !matches!(m, ServerMessage::Event { event: RoomEvent::MemberUpdated { member }, .. } if member.identity == "cleo")),
        "a participant's hand reached another participant: {replayed:?}"
    );
    // Live events follow, once each.
    ana.ok(Command::SendChat {
        text: "live".into(),
    })
    .await;
    let live = ben.drain(Duration::from_millis(300)).await;
    assert_eq!(chat_texts(&live), vec!["live"]);
    host.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "ben" && member.presence == Presence::Online)).await;
}

#[tokio::test]
async fn resume_after_the_log_rolled_over_gets_a_fresh_snapshot() {
    let t = TestServer::start_with(|c| {
        c.limits.event_log_len = 8;
        c.limits.rate.chat.burst = 100;
    })
    .await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let ben = t.join("r", Role::Participant, "ben").await;
    let (token, session_id, last_seq) = ben.drop_connection();
    for i in 0..20 {
        ana.ok(Command::SendChat {
            text: format!("m{i}"),
        })
        .await;
    }
    let (ben, first) = t.resume(&token, &session_id, last_seq).await;
    match first {
        ServerMessage::Welcome {
            resume_failed,
            snapshot,
            session_id: sid,
            ..
        } => {
            assert!(resume_failed.unwrap().contains("no longer kept"));
            assert_eq!(sid, session_id, "the session id survives");
            assert_eq!(snapshot.chat.last().unwrap().text, "m19");
        }
        other => panic!("expected a fresh welcome, got {other:?}"),
    }
    drop(ben);
}

#[tokio::test]
async fn resume_of_an_unknown_session_is_a_fresh_welcome() {
    let t = TestServer::start().await;
    let token = t.token("r", Role::Participant, "ana");
    let (_, first) = t.resume(&token, &uuid::Uuid::new_v4().to_string(), 3).await;
    assert!(
        matches!(
            first,
            ServerMessage::Welcome {
                resume_failed: Some(_),
                ..
            }
        ),
        "{first:?}"
    );
}

#[tokio::test]
async fn a_resent_request_id_is_applied_once() {
    let t = TestServer::start().await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let mut ben = t.join("r", Role::Participant, "ben").await;
    ana.send_with_id(
        Command::SendChat {
            text: "once".into(),
        },
        "req-1",
    )
    .await;
    let first = ana.reply("req-1").await;
    // The ack was lost with the connection: resend after resuming.
    let (token, session_id, last_seq) = ana.drop_connection();
    let (mut ana, _) = t.resume(&token, &session_id, last_seq).await;
    ana.send_with_id(
        Command::SendChat {
            text: "once".into(),
        },
        "req-1",
    )
    .await;
    let again = ana.reply("req-1").await;
    assert_eq!(first, again, "the same ack, with the same message id");
    // And on the same connection.
    ana.send_with_id(
        Command::SendChat {
            text: "once".into(),
        },
        "req-1",
    )
    .await;
    assert_eq!(ana.reply("req-1").await, first);
    let seen = ben.drain(Duration::from_millis(400)).await;
    assert_eq!(chat_texts(&seen), vec!["once"]);
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_while_others_keep_receiving() {
    let t = TestServer::start_with(|c| {
        c.server.socket_send_buffer = 16 * 1024;
        c.limits.outbound_queue = 64;
        c.limits.rate.chat.per_second = 10_000.0;
        c.limits.rate.chat.burst = 10_000;
        // 600 chats of 1.9 KB as fast as it can: over the default bytes per session too.
        c.limits.rate.bytes.per_second = 1e9;
        c.limits.rate.bytes.burst = u32::MAX;
    })
    .await;
    let mut sender = t.join("big", Role::Host, "host").await;
    // A reader with a tiny receive buffer that never polls its socket.
    let stalled = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(t.server.addr).await.unwrap();
        let url = t.ws_url(&t.token("big", Role::Participant, "stalled"));
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        ws
    };
    let mut readers = Vec::new();
    for i in 0..50 {
        readers.push(t.join("big", Role::Participant, &format!("p{i}")).await);
    }
    let n = 600;
    let text = "x".repeat(1900);
    // The sender reads as it goes: it is an attentive reader too.
    let send = async {
        for _ in 0..n {
            sender.send(Command::SendChat { text: text.clone() }).await;
            while sender.try_recv(Duration::ZERO).await.is_some() {}
        }
    };
    let receive = futures_util::future::join_all(readers.iter_mut().map(|r| async move {
        let mut got = 0;
        while got < n {
            match r.try_recv(WAIT).await {
                Some(ServerMessage::Event {
                    event: RoomEvent::ChatMessage { .. },
                    ..
                }) => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        got
    }));
    let (_, counts) = tokio::join!(send, receive);
    assert!(
        counts.iter().all(|c| *c == n),
        "every attentive reader got all {n}: {counts:?}"
    );
    // The room saw the stalled session end; its seat is kept for a resume.
    let observer = t.join("big", Role::Moderator, "mo").await;
    let stalled_member = observer
        .snapshot()
        .members
        .iter()
        .find(|m| m.identity == "stalled")
        .cloned()
        .expect("seat kept");
    assert_eq!(stalled_member.presence, Presence::Reconnecting);
    // Reading now drains what the kernel held, then the end: a 1013 close frame if it fit.
    let mut stalled = stalled;
    let code = tokio::time::timeout(WAIT, async {
        while let Some(msg) = stalled.next().await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) = msg {
                return frame.map(|f| f.code);
            }
            if msg.is_err() {
                return None;
            }
        }
        None
    })
    .await
    .expect("stalled socket ends");
    assert!(code.is_none() || code == Some(CloseCode::Again), "{code:?}");
}

#[tokio::test]
async fn rate_limits_refuse_then_recover_and_abuse_closes_with_1008() {
    let t = TestServer::start_with(|c| c.limits.abuse.strikes = 30).await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    // Default chat bucket: a burst of 10, 2 per second.
    let mut ids = Vec::new();
    for i in 0..14 {
        ids.push(
            ana.send(Command::SendChat {
                text: format!("m{i}"),
            })
            .await,
        );
    }
    let mut acks = 0;
    let mut limited = Vec::new();
    for id in &ids {
        match ana.reply(id).await {
            ServerMessage::Ack { .. } => acks += 1,
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms,
                ..
            } => limited.push(retry_after_ms.expect("retry hint")),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((acks, limited.len()), (10, 4));
    tokio::time::sleep(Duration::from_millis(limited[0] + 50)).await;
    ana.ok(Command::SendChat {
        text: "after waiting".into(),
    })
    .await;
    // Hands have their own bucket: chat limits do not block them.
    ana.ok(Command::RaiseHand).await;
    // Hammering past the limit closes the socket.
    for i in 0..60 {
        ana.send(Command::SendChat {
            text: format!("flood {i}"),
        })
        .await;
    }
    assert_eq!(ana.closed().await, Some(CloseCode::Policy));
}

#[tokio::test]
async fn reconnecting_member_is_announced_as_left_only_after_the_grace() {
    let t = TestServer::start_with(|c| c.limits.reconnect_grace_s = 1).await;
    let mut host = t.join("r", Role::Host, "host").await;
    let ana = t.join("r", Role::Participant, "ana").await;
    drop(ana);
    host.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "ana" && member.presence == Presence::Reconnecting)).await;
    host.expect_event(|e| {
        *e == RoomEvent::MemberLeft {
            identity: "ana".into(),
            reason: LeaveReason::TimedOut,
        }
    })
    .await;
    // A close frame (normal, going away or without a code) is leaving on purpose: no grace.
    let mut ben = t.join("r", Role::Participant, "ben").await;
    ben.socket.close(None).await.unwrap();
    host.expect_event(|e| {
        *e == RoomEvent::MemberLeft {
            identity: "ben".into(),
            reason: LeaveReason::Left,
        }
    })
    .await;
}

#[tokio::test]
async fn a_silent_socket_is_closed_after_the_idle_timeout() {
    let t = TestServer::start_with(|c| {
        c.limits.idle_timeout_s = 1;
        c.limits.ping_interval_s = 60;
    })
    .await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ana.closed().await, Some(CloseCode::from(4000)));
}

#[tokio::test]
async fn the_server_pings_so_quiet_clients_stay_connected() {
    let t = TestServer::start_with(|c| {
        c.limits.idle_timeout_s = 2;
        c.limits.ping_interval_s = 1;
    })
    .await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    // Reading answers pings (tungstenite replies with pongs), which counts as activity.
    assert!(ana.drain(Duration::from_millis(3500)).await.is_empty());
    ana.ok(Command::RaiseHand).await;
}

#[tokio::test]
async fn connection_limits_refuse_before_the_upgrade() {
    let t = TestServer::start_with(|c| c.server.max_sessions_per_room = 2).await;
    let _a = t.join("r", Role::Participant, "a").await;
    let _b = t.join("r", Role::Participant, "b").await;
    let (status, body) = http_get(
        &format!(
            "{}/ws?token={}",
            t.http(),
            t.token("r", Role::Participant, "c")
        ),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("full"), "{body}");
    // Another room still has room.
    let _other = t.join("other", Role::Participant, "c").await;
}

#[tokio::test]
async fn shutdown_tells_every_session_and_finishes() {
    let t = TestServer::start().await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let mut ben = t.join("q", Role::Participant, "ben").await;
    let addr = t.server.addr;
    let stopped = tokio::spawn(t.server.shutdown());
    for client in [&mut ana, &mut ben] {
        let notice = client
            .expect(|m| matches!(m, ServerMessage::ServerShutdown { .. }))
            .await;
        assert_eq!(
            notice,
            ServerMessage::ServerShutdown {
                reconnect_after_ms: 2000
            }
        );
        assert_eq!(client.closed().await, Some(CloseCode::Restart));
    }
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("shutdown is bounded")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_request_id_over_64_bytes_is_refused_and_a_64_byte_one_is_acked() {
    let t = TestServer::start().await;
    let mut ana = t.join("ids", Role::Participant, "ana").await;
    ana.send_raw(
        serde_json::json!({"type": "send_chat", "text": "hi", "request_id": "x".repeat(65)})
            .to_string(),
    )
    .await;
    match ana.recv().await {
        ServerMessage::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::InvalidMessage);
            assert!(message.contains("64 bytes"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Nothing was applied: the next chat is the first the room has.
    let id = "y".repeat(64);
    ana.send_with_id(Command::SendChat { text: "ok".into() }, &id)
        .await;
    assert!(matches!(
        ana.reply(&id).await,
        ServerMessage::Ack { id: Some(1), .. }
    ));
}

/// Opens `/ws` over a bare TCP socket and reads past the welcome, so a test can write frames
/// no WebSocket library would.
async fn raw_session(t: &TestServer, identity: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = t.token("raw", Role::Participant, identity);
    let mut tcp = tokio::net::TcpStream::connect(t.server.addr).await.unwrap();
    let request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// Reads server frames until a close frame; returns its code.
async fn close_code(tcp: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(WAIT, async {
        loop {
            let first = tcp.read_u8().await.unwrap();
            let len = match tcp.read_u8().await.unwrap() & 0x7f {
                126 => tcp.read_u16().await.unwrap() as usize,
                127 => tcp.read_u64().await.unwrap() as usize,
                n => n as usize,
            };
            let mut payload = vec![0; len];
            tcp.read_exact(&mut payload).await.unwrap();
            if first & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    })
    .await
    .expect("a close frame")
}

#[tokio::test]
async fn broken_frames_close_with_1007_or_1002_not_1001() {
    use tokio::io::AsyncWriteExt;
    let t = TestServer::start().await;
    // A text frame that is not UTF-8 (masked, as a client must).
    let mut tcp = raw_session(&t, "bytes").await;
    let mask = [1u8, 2, 3, 4];
    let payload: Vec<u8> = [0xffu8, 0xfe, 0xfd]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    tcp.write_all(&frame).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1007);
    // An unmasked frame from a client breaks the protocol.
    let mut tcp = raw_session(&t, "unmasked").await;
    tcp.write_all(&[0x81, 2, b'h', b'i']).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1002);
}
