//! The resume scenario: connect N sessions, drop every socket without a close frame, then resume them all at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::Role;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{connect, hello, join_all, open, ramp, Endpoint, Hello, Session, Ws};
use super::frames::leading_u64;
use super::report::{ChatReport, Latency, ResumeFigures};
use super::samples::{histogram, Errors};
use super::{ChatArgs, Common, Scenario, Target};
use crate::probe::Probe;
use crate::LoadError;

/// A reconnect's first message, its own duration, when it finished, and its socket.
type Resumed = (Hello, Duration, Instant, Ws);

/// A session that connected: its index, socket and what it needs to resume.
type Opened = (usize, Ws, Session);

/// Connect N, drop every socket without a close frame, then resume them all at once.
pub(super) async fn resume(args: &ChatArgs, ep: Endpoint) -> Result<ChatReport, LoadError> {
    let common = &args.common;
    if ep.target != Target::Convene {
        return Err(LoadError::Setup(
            "--scenario resume needs --target convene (Socket.IO sessions do not resume here)"
                .into(),
        ));
    }
    let probe = Probe::start(common.server_pid);
    let n = common.clients;
    let ep = Arc::new(ep);
    let errors = Arc::new(Errors::default());
    let ramp_started = Instant::now();
    let mut opened = open_all(&ep, &errors, common).await;
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(common.settle_ms)).await;
    catch_up(&mut opened);
    let connected = opened.len() as u64;
    if connected == 0 {
        return Err(LoadError::Setup(format!(
            "no session connected: {:?}",
            errors.samples()
        )));
    }
    let connect_failures = n as u64 - connected;
    let before = probe.sample();
    // Drop the sockets: the TCP connections end with no WebSocket close frame, like a network loss.
    let sessions: Vec<(usize, Session)> = opened
        .into_iter()
        .map(|(i, ws, s)| {
            drop(ws);
            (i, s)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(args.resume_pause_ms)).await;

    let started = Instant::now();
    let outcomes = resume_all(&ep, &errors, sessions).await;
    let after = probe.sample();
    let (figures, sockets) = tally(outcomes, connected, started);
    let window_s = started.elapsed().as_secs_f64();
    close_all(sockets).await;
    let (tool, server) = probe.usage(&before, &after, None);
    Ok(ChatReport {
        target: Target::Convene,
        scenario: Scenario::Resume,
        clients: n,
        senders: 0,
        rate: 0.0,
        duration_s: 0.0,
        connected,
        connect_failures,
        ramp_s,
        sent: 0,
        sent_per_s: 0.0,
        expected: 0,
        delivered: 0,
        delivered_per_s: 0.0,
        window_s,
        latency: Latency::default(),
        nodes: None,
        errors: errors.count(),
        error_samples: errors.samples(),
        reconnects: 0,
        tool,
        server,
        idle: None,
        resume: Some(figures),
        redis: None,
    })
}

/// Opens every session at the ramp rate; returns those that connected.
async fn open_all(ep: &Arc<Endpoint>, errors: &Arc<Errors>, common: &Common) -> Vec<Opened> {
    let n = common.clients;
    let gate = Arc::new(Semaphore::new(common.connect_concurrency));
    let opened: Arc<Mutex<Vec<Opened>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let handles = ramp(n, common.ramp_per_sec, |i| {
        let (ep, errors, gate, opened) = (ep.clone(), errors.clone(), gate.clone(), opened.clone());
        async move {
            let _permit = gate.acquire().await;
            if let Some((ws, session, _)) = connect(
                &ep,
                ep.node_of(i),
                &format!("c{i}"),
                Role::Participant,
                None,
                &errors,
            )
            .await
            {
                opened.lock().expect("opened lock").push((i, ws, session));
            }
        }
    })
    .await;
    join_all(handles).await;
    let opened = std::mem::take(&mut *opened.lock().expect("opened lock"));
    opened
}

/// Reads what arrived meanwhile, as a live client would have, so `last_seq` is current.
fn catch_up(opened: &mut [Opened]) {
    for (_, ws, session) in opened.iter_mut() {
        while let Some(Some(Ok(message))) = ws.next().now_or_never() {
            if let Message::Text(text) = message {
                if let Some(seq) = text
                    .as_str()
                    .strip_prefix(r#"{"type":"event","seq":"#)
                    .and_then(leading_u64)
                {
                    session.last_seq = seq;
                }
            }
        }
    }
}

/// Reconnects every session at once with `resume`; returns how each one went.
async fn resume_all(
    ep: &Arc<Endpoint>,
    errors: &Arc<Errors>,
    sessions: Vec<(usize, Session)>,
) -> Vec<Resumed> {
    let outcomes: Arc<Mutex<Vec<Resumed>>> =
        Arc::new(Mutex::new(Vec::with_capacity(sessions.len())));
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|(i, session)| {
            let (ep, errors, outcomes) = (ep.clone(), errors.clone(), outcomes.clone());
            tokio::spawn(async move {
                let t0 = Instant::now();
                let who = format!("c{i}");
                let url = ep.url(ep.node_of(i), &who, Role::Participant, Some(&session));
                let mut session = session;
                let result = match open(&url).await {
                    Ok(mut ws) => hello(&mut ws, Target::Convene, &mut session)
                        .await
                        .map(|h| (h, ws)),
                    Err(error) => Err(error),
                };
                match result {
                    Ok((hello, ws)) => outcomes.lock().expect("outcomes lock").push((
                        hello,
                        t0.elapsed(),
                        Instant::now(),
                        ws,
                    )),
                    Err(error) => errors.add(format!("{who}: resume: {error}")),
                }
            })
        })
        .collect();
    join_all(handles).await;
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes lock"));
    outcomes
}

/// Resumed, fresh and failed sessions and the resume latency; hands back the sockets.
fn tally(outcomes: Vec<Resumed>, connected: u64, started: Instant) -> (ResumeFigures, Vec<Ws>) {
    let mut hist = histogram();
    let mut figures = ResumeFigures {
        sessions: connected,
        ..Default::default()
    };
    let mut last = started;
    let mut sockets = Vec::with_capacity(outcomes.len());
    for (hello, took, finished, ws) in outcomes {
        if hello == Hello::Resumed {
            figures.resumed += 1;
            hist.saturating_record((took.as_micros() as u64).max(1));
            last = last.max(finished);
        } else {
            figures.fresh += 1;
        }
        sockets.push(ws);
    }
    figures.failed = connected - figures.resumed - figures.fresh;
    figures.all_resumed_ms = last.duration_since(started).as_secs_f64() * 1000.0;
    figures.latency = Latency::of(&hist);
    (figures, sockets)
}

/// Leaves politely this time.
async fn close_all(sockets: Vec<Ws>) {
    let closing: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            })
        })
        .collect();
    join_all(closing).await;
}
