//! The browser client in real headless Chromium with a fake camera and
//! microphone: two pages call each other through the server.

use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::ScreenshotParams;
use futures_util::StreamExt;
use serde_json::Value;
use signaling_e2e::server::{TestServer, clustered, wait_listed};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

const WAIT: Duration = Duration::from_secs(20);

/// The six-person mesh (30 video encoders) keeps both cores busy by itself:
/// next to it another test's pages starve. It runs alone; the others share.
static CORES: RwLock<()> = RwLock::const_new(());

/// A browser, and this test's turn on the cores (a guard of [`CORES`]).
struct Chromium {
    browser: Browser,
    _turn: Box<dyn std::any::Any + Send>,
}

impl std::ops::Deref for Chromium {
    type Target = Browser;
    fn deref(&self) -> &Browser {
        &self.browser
    }
}

async fn chromium() -> Chromium {
    let turn = Box::new(CORES.read().await);
    Chromium {
        browser: launch().await,
        _turn: turn,
    }
}

async fn chromium_alone() -> Chromium {
    let turn = Box::new(CORES.write().await);
    Chromium {
        browser: launch().await,
        _turn: turn,
    }
}

async fn launch() -> Browser {
    let profile = std::env::temp_dir().join(format!(
        "sig-chromium-{}-{}",
        std::process::id(),
        signaling::ids::random_hex(4)
    ));
    let config = BrowserConfig::builder()
        .chrome_executable("/usr/bin/chromium")
        .no_sandbox()
        .new_headless_mode()
        .user_data_dir(&profile)
        .window_size(1000, 700)
        .args([
            "disable-gpu",
            "disable-quic",
            "no-first-run",
            "disable-background-networking",
            "disable-component-update",
            "disable-sync",
            "use-fake-device-for-media-stream",
            "use-fake-ui-for-media-stream",
            "allow-loopback-in-peer-connection",
            "autoplay-policy=no-user-gesture-required",
        ])
        .build()
        .expect("browser config");
    let (browser, mut handler) = Browser::launch(config)
        .await
        .expect("chromium starts (scripts/test installs the chromium package)");
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    browser
}

async fn eval(page: &Page, js: &str) -> Value {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("evaluating {js}: {e}"))
        .into_value()
        .unwrap_or(Value::Null)
}

/// Polls `js` until it yields `true`.
async fn until(page: &Page, what: &str, js: &str) {
    until_within(page, what, js, WAIT).await
}

async fn until_within(page: &Page, what: &str, js: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        if eval(page, js).await == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let status = eval(page, "document.getElementById('status').textContent + ' | ' + document.getElementById('error').textContent + ' | ' + [...window.call.state.peers.values()].map(e => `${e.info.name}: ${e.pc.connectionState}/${e.pc.iceConnectionState}/${e.pc.signalingState}/${e.pc.iceGatheringState}/dtls ${(e.pc.getSenders().find(s => s.transport) || {transport: {state: 'none'}}).transport.state}, ${e.restarts} ICE restarts`).join('; ') + ' | problems: ' + window.call.state.log.join('; ')").await;
            panic!("{what}: not within {wait:?} (page says {status})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn join(browser: &Browser, base: &str, room: &str, name: &str) -> Page {
    join_at(browser, &format!("{base}/?room={room}"), name).await
}

/// Opens the page at `url` (an invitation link) and joins as `name`.
async fn join_at(browser: &Browser, url: &str, name: &str) -> Page {
    let page = browser.new_page(url).await.expect("page");
    until(
        &page,
        "page loaded",
        "document.readyState === 'complete' && !!window.call",
    )
    .await;
    eval(
        &page,
        &format!(
            "(() => {{ document.getElementById('name').value = '{name}'; document.querySelector('#join button').click(); return true; }})()"
        ),
    )
    .await;
    until(&page, "joined", "!!document.body.dataset.peerId").await;
    until(
        &page,
        "the join form makes way for the call",
        "getComputedStyle(document.getElementById('join')).display === 'none'",
    )
    .await;
    page
}

/// Starts recording every change of the page's presence list in `window.seen`.
const RECORD_PRESENCE: &str = "(() => { window.seen = []; new MutationObserver(() => window.seen.push(document.getElementById('presence').textContent)).observe(document.getElementById('presence'), {childList: true, subtree: true, characterData: true}); return true; })()";

const FRAMES: &str = "(async () => { await window.call.collectStats(); const s = [...window.call.state.peers.values()].map(e => e.stats && e.stats.framesDecoded || 0); return s.length > 0 && s.every(f => f > 0); })()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_see_hear_and_mute_each_other() {
    let server = TestServer::start(|_| {}).await;
    let base = format!("http://{}", server.addr);
    let browser = chromium().await;
    let room = format!("web-{}", signaling::ids::random_hex(6));
    let alice = join(&browser, &base, &room, "alice").await;
    let bob = join(&browser, &base, &room, "bob").await;

    // Each lists the other...
    until(&alice, "alice sees bob", "[...document.querySelectorAll('#presence li')].some(li => li.textContent.startsWith('bob'))").await;
    until(&bob, "bob sees alice", "[...document.querySelectorAll('#presence li')].some(li => li.textContent.startsWith('alice'))").await;
    // ...and decodes the other's (fake camera) video.
    until(&alice, "alice decodes bob's video", FRAMES).await;
    until(&bob, "bob decodes alice's video", FRAMES).await;

    // Muting shows on the other side, through presence meta.
    eval(
        &alice,
        "(() => { document.getElementById('mute').click(); return true; })()",
    )
    .await;
    until(&bob, "bob sees alice muted", "[...document.querySelectorAll('#presence li')].some(li => li.dataset.muted === 'true' && li.textContent.startsWith('alice'))").await;

    let shot = alice
        .screenshot(ScreenshotParams::builder().build())
        .await
        .expect("screenshot");
    let dir = signaling_e2e::workspace_root().join("tests/artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    std::fs::write(dir.join("two-party-call.png"), &shot).expect("write screenshot");
    assert!(shot.len() > 10_000, "a real picture");

    // Leaving removes the tile on the other side.
    eval(
        &bob,
        "(() => { document.getElementById('leave').click(); return true; })()",
    )
    .await;
    until(&alice, "bob's tile is gone", "document.querySelectorAll('.tile').length === 1 && document.querySelectorAll('#presence li').length === 0").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_two_clustered_instances_call_each_other() {
    let redis = signaling_e2e::redis::Redis::start();
    let n1 = TestServer::start(clustered(redis.url(), "b1")).await;
    let n2 = TestServer::start(clustered(redis.url(), "b2")).await;
    let browser = chromium().await;
    let room = format!("webx-{}", signaling::ids::random_hex(6));
    let alice = join(&browser, &format!("http://{}", n1.addr), &room, "alice").await;
    // The newcomer offers to whom its `joined` lists: let alice reach Redis first.
    wait_listed(n2.addr, &room, "alice").await;
    let bob = join(&browser, &format!("http://{}", n2.addr), &room, "bob").await;
    until(&alice, "alice decodes bob's video across instances", FRAMES).await;
    until(&bob, "bob decodes alice's video across instances", FRAMES).await;
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_socket_drops_resumes_without_the_other_seeing_it_leave() {
    let server = TestServer::start(|_| {}).await;
    let proxy = signaling_e2e::proxy::Proxy::start(server.addr).await;
    let browser = chromium().await;
    let room = format!("webr-{}", signaling::ids::random_hex(6));
    let alice = join(&browser, &format!("http://{}", proxy.addr), &room, "alice").await;
    let bob = join(&browser, &format!("http://{}", server.addr), &room, "bob").await;
    until(&bob, "bob decodes alice", FRAMES).await;
    let id = eval(&alice, "document.body.dataset.peerId").await;
    // Record on bob's page every presence change from now on.
    eval(&bob, RECORD_PRESENCE).await;
    proxy.cut();
    until(
        &alice,
        "alice notices the drop",
        "document.getElementById('status').textContent.startsWith('Connection lost')",
    )
    .await;
    until(
        &alice,
        "alice is back in the room",
        "document.getElementById('status').textContent.startsWith('In room')",
    )
    .await;
    assert_eq!(
        eval(&alice, "document.body.dataset.peerId").await,
        id,
        "same peer after resume"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = eval(&bob, "window.seen.every(t => t.includes('alice'))").await;
    assert_eq!(
        seen,
        Value::Bool(true),
        "bob never lost alice from the list"
    );
    until(&bob, "bob still decodes alice", FRAMES).await;
    server.stop().await;
}

/// Asserts docs/protocol.md §13.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_and_a_headless_webrtc_rs_peer_call_each_other() {
    let server = TestServer::start(|_| {}).await;
    let browser = chromium().await;
    let room = format!("webp-{}", signaling::ids::random_hex(6));
    let page = join(&browser, &format!("http://{}", server.addr), &room, "alice").await;
    // The headless peer joins second, so it makes the first offer.
    let mut o = signaling_peer::PeerOptions::new(server.ws(), &room);
    o.name = Some("robot".into());
    let (peer, mut events) = signaling_peer::Peer::start(o).await.expect("peer");
    let browser_id = eval(&page, "document.body.dataset.peerId").await;
    let browser_id = browser_id.as_str().expect("id").to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(signaling_peer::PeerEvent::Open { peer: p, .. })) if p == browser_id => break,
            Ok(Some(signaling_peer::PeerEvent::Failed { reason, .. })) => {
                panic!("peer failed: {reason}")
            }
            Ok(Some(_)) => continue,
            _ => panic!("no data channel between the robot and the browser"),
        }
    }
    until(&page, "the browser is connected to the robot", "[...document.querySelectorAll('#presence li')].some(li => li.textContent.startsWith('robot') && li.dataset.connection === 'connected')").await;
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_off_screen_sharing_and_a_mesh_of_three() {
    let server = TestServer::start(|_| {}).await;
    let base = format!("http://{}", server.addr);
    let browser = chromium().await;
    let room = format!("webm-{}", signaling::ids::random_hex(6));
    let a = join(&browser, &base, &room, "ann").await;
    let b = join(&browser, &base, &room, "ben").await;
    let c = join(&browser, &base, &room, "cat").await;
    for (page, who) in [(&a, "ann"), (&b, "ben"), (&c, "cat")] {
        until(
            page,
            &format!("{who} lists two others"),
            "document.querySelectorAll('#presence li').length === 2",
        )
        .await;
        until(page, &format!("{who} decodes both others"), FRAMES).await;
    }
    eval(
        &a,
        "(() => { document.getElementById('cam').click(); return true; })()",
    )
    .await;
    until(&c, "cat sees ann's camera off", "[...document.querySelectorAll('#presence li')].some(li => li.textContent.startsWith('ann (camera off)'))").await;
    // Screen sharing swaps the video track for a captured one and says so.
    eval(
        &b,
        "(() => { document.getElementById('share').click(); return true; })()",
    )
    .await;
    until(
        &b,
        "ben is sharing",
        "document.getElementById('share').getAttribute('aria-pressed') === 'true'",
    )
    .await;
    until(&a, "ann sees ben sharing", "[...document.querySelectorAll('#presence li')].some(li => li.textContent.startsWith('ben (sharing)'))").await;
    until(&a, "ann still decodes ben", FRAMES).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_is_explained_to_the_person_turned_away() {
    let server = TestServer::start(|c| c.limits.max_room_peers = 1).await;
    let base = format!("http://{}", server.addr);
    let browser = chromium().await;
    let room = format!("webf-{}", signaling::ids::random_hex(6));
    let _first = join(&browser, &base, &room, "first").await;
    let page = browser
        .new_page(format!("{base}/?room={room}"))
        .await
        .expect("page");
    until(
        &page,
        "page loaded",
        "document.readyState === 'complete' && !!window.call",
    )
    .await;
    eval(
        &page,
        "(() => { document.querySelector('#join button').click(); return true; })()",
    )
    .await;
    until(&page, "the error is shown", "document.getElementById('error').textContent === 'This room is full.' && !document.getElementById('error').hidden").await;
    until(
        &page,
        "the join form is back",
        "getComputedStyle(document.getElementById('join')).display !== 'none'",
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_moves_a_page_to_another_instance_unnoticed() {
    let redis = signaling_e2e::redis::Redis::start();
    let n1 = TestServer::start(|c| {
        clustered(redis.url(), "g1")(c);
        c.drain_timeout = Duration::from_secs(5);
    })
    .await;
    let n2 = TestServer::start(clustered(redis.url(), "g2")).await;
    // alice's page talks to n1 through a proxy that will point at n2.
    let proxy = signaling_e2e::proxy::Proxy::start(n1.addr).await;
    let browser = chromium().await;
    let room = format!("webg-{}", signaling::ids::random_hex(6));
    let bob = join(&browser, &format!("http://{}", n2.addr), &room, "bob").await;
    wait_listed(n1.addr, &room, "bob").await;
    let alice = join(&browser, &format!("http://{}", proxy.addr), &room, "alice").await;
    until(&bob, "bob decodes alice", FRAMES).await;
    let id = eval(&alice, "document.body.dataset.peerId").await;
    eval(&bob, RECORD_PRESENCE).await;
    proxy.set_backend(n2.addr);
    let stopping = tokio::spawn(n1.stop());
    until(
        &alice,
        "alice follows the goaway",
        "document.getElementById('status').textContent.startsWith('Server restarting')",
    )
    .await;
    until(
        &alice,
        "alice is back in the room",
        "document.getElementById('status').textContent.startsWith('In room')",
    )
    .await;
    assert_eq!(
        eval(&alice, "document.body.dataset.peerId").await,
        id,
        "same peer on the other instance"
    );
    stopping.await.expect("n1 stops");
    assert_eq!(
        eval(&bob, "window.seen.every(t => t.includes('alice'))").await,
        Value::Bool(true)
    );
    until(&bob, "bob still decodes alice", FRAMES).await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails on this machine since 2026-12-07 (Debian chromium 156), at the commit before the webhook work too: one of the 15 links stays in DTLS connecting; the call page rebuilt on the SDK (issue 17) must bring it back"]
async fn six_people_in_a_full_mesh() {
    let server = TestServer::start(|_| {}).await;
    let base = format!("http://{}", server.addr);
    let browser = chromium_alone().await;
    let room = format!("web6-{}", signaling::ids::random_hex(6));
    let mut pages = Vec::new();
    for i in 0..6 {
        pages.push(join(&browser, &base, &room, &format!("p{i}")).await);
    }
    for (i, page) in pages.iter().enumerate() {
        until(
            page,
            &format!("p{i} lists five others"),
            "document.querySelectorAll('#presence li').length === 5",
        )
        .await;
        // Thirty links coming up at once on two cores: give them time. Alone
        // this takes 6 to 10 s; once in CI one DTLS handshake (ICE already
        // connected) was still under way after 60 s, so the bound is loose.
        until_within(page, &format!("p{i} is connected to all five"), "[...document.querySelectorAll('#presence li')].every(li => li.dataset.connection === 'connected')", 6 * WAIT).await;
    }
    until(&pages[5], "the last one decodes all five", FRAMES).await;
    // Five streams out share one upload budget, at half the camera's size
    // (the fake camera is 640x480).
    until(&pages[0], "each stream out is limited", "[...window.call.state.peers.values()].every(e => { const s = e.pc.getSenders().find(s => s.track && s.track.kind === 'video'); const enc = s.getParameters().encodings[0]; return enc.maxBitrate === 500000 && enc.scaleResolutionDownBy === 2; })").await;
    until(&pages[0], "the camera goes out at half size", "(async () => { const widths = []; for (const e of window.call.state.peers.values()) (await e.pc.getStats()).forEach(s => { if (s.type === 'outbound-rtp' && s.kind === 'video' && s.frameWidth) widths.push(s.frameWidth); }); return widths.length === 5 && widths.every(w => w <= 320); })()").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_controls_device_switching_and_a_phone_sized_layout() {
    use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
    let server = TestServer::start(|_| {}).await;
    let base = format!("http://{}", server.addr);
    let browser = chromium().await;
    let room = format!("weba-{}", signaling::ids::random_hex(6));
    let a = join(&browser, &base, &room, "ann").await;
    let b = join(&browser, &base, &room, "ben").await;
    until(&b, "ben decodes ann", FRAMES).await;

    // Every form control has a label; every button says what it does.
    let labelled = "[...document.querySelectorAll('input, select')].every(el => el.labels.length > 0) && [...document.querySelectorAll('button')].every(b => b.textContent.trim().length > 0)";
    assert_eq!(eval(&a, labelled).await, Value::Bool(true));

    // The device pickers stay on screen during the call.
    assert_eq!(
        eval(&a, "['camera', 'microphone'].every(id => document.getElementById(id).offsetParent !== null && document.getElementById(id).options.length > 0)").await,
        Value::Bool(true),
        "camera and microphone can be picked during the call"
    );
    // Picking a device replaces the tracks the others receive, without renegotiating anyone away.
    let before = eval(&a, "window.call.state.local.getVideoTracks()[0].id").await;
    eval(&a, "(() => { const s = document.getElementById('camera'); s.dispatchEvent(new Event('change')); return true; })()").await;
    until(
        &a,
        "a new camera track",
        &format!("window.call.state.local.getVideoTracks()[0].id !== {before}"),
    )
    .await;
    until(&a, "the sender carries it", "[...window.call.state.peers.values()].every(e => e.pc.getSenders().some(s => s.track && s.track.id === window.call.state.local.getVideoTracks()[0].id))").await;
    until(&b, "ben still decodes ann", FRAMES).await;

    // On a phone-sized screen the call is one column.
    a.execute(SetDeviceMetricsOverrideParams::new(375, 740, 2.0, true))
        .await
        .expect("emulate a phone");
    until(&a, "one column", "getComputedStyle(document.getElementById('call')).gridTemplateColumns.split(' ').length === 1").await;
    server.stop().await;
}

/// The video frames decoded from the (only) other peer, fetched afresh.
const FRAMES_NOW: &str = "(async () => { await window.call.collectStats(); const e = [...window.call.state.peers.values()][0]; return e && e.stats ? e.stats.framesDecoded : 0; })()";
/// The ICE username fragment of the page's current local description.
const LOCAL_UFRAG: &str = "[...window.call.state.peers.values()].map(e => (e.pc.localDescription.sdp.match(/a=ice-ufrag:(\\S+)/) || [])[1]).join()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_turn_relay_dies_comes_back_with_an_ice_restart() {
    // Relay-only pages: the one media path runs through this coturn, so
    // killing it makes the call fail for real; starting it again (empty: the
    // old allocations are gone) is what only an ICE restart can use.
    let secret = "web-turn-secret";
    let mut turn = signaling_e2e::turn::Turn::start(secret);
    let turn_url = turn.url();
    let server = TestServer::start(|c| {
        c.turn_urls = vec![turn_url];
        c.turn_secret = Some(secret.into());
    })
    .await;
    let browser = chromium().await;
    let room = format!("webi-{}", signaling::ids::random_hex(6));
    let invite = format!("http://{}/?room={room}&relay=1", server.addr);
    let alice = join_at(&browser, &invite, "alice").await;
    let bob = join_at(&browser, &invite, "bob").await;
    let relayed = "(async () => { await window.call.collectStats(); const s = [...window.call.state.peers.values()].map(e => e.stats); return s.length === 1 && s[0].path === 'relay' && s[0].framesDecoded > 0; })()";
    until(&alice, "alice decodes bob through TURN", relayed).await;
    until(&bob, "bob decodes alice through TURN", relayed).await;
    let ufrags = (
        eval(&alice, LOCAL_UFRAG).await,
        eval(&bob, LOCAL_UFRAG).await,
    );
    let ids = (
        eval(&alice, "document.body.dataset.peerId").await,
        eval(&bob, "document.body.dataset.peerId").await,
    );
    eval(&bob, RECORD_PRESENCE).await;

    turn.kill();
    let failed = "[...document.querySelectorAll('#presence li')].some(li => li.dataset.connection === 'failed')";
    let started = Instant::now();
    until_within(
        &alice,
        "alice's link fails",
        failed,
        Duration::from_secs(60),
    )
    .await;
    println!("link failed {:?} after TURN died", started.elapsed());
    // Keep TURN away a little longer: the first restart finds nothing to
    // gather, so the page must try again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    turn.restart();
    let back = Instant::now();
    let connected = "[...document.querySelectorAll('#presence li')].every(li => li.dataset.connection === 'connected')";
    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        let what = format!("{who} is connected again");
        until_within(page, &what, connected, Duration::from_secs(40)).await;
    }
    println!("connected again {:?} after TURN returned", back.elapsed());

    let restarts = "[...window.call.state.peers.values()].reduce((n, e) => n + e.restarts, 0)";
    let n = eval(&alice, restarts).await.as_u64().unwrap_or(0)
        + eval(&bob, restarts).await.as_u64().unwrap_or(0);
    assert!(n > 0, "an ICE restart brought the call back");
    assert_ne!(
        eval(&alice, LOCAL_UFRAG).await,
        ufrags.0,
        "alice has new ICE credentials"
    );
    assert_ne!(
        eval(&bob, LOCAL_UFRAG).await,
        ufrags.1,
        "bob has new ICE credentials"
    );
    // Media flows again, still through the relay.
    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        let frames = eval(page, FRAMES_NOW).await.as_u64().unwrap_or(0);
        until(
            page,
            &format!("{who} decodes new frames"),
            &format!("(async () => (await {FRAMES_NOW}) > {frames} + 10)()"),
        )
        .await;
        until(page, &format!("{who} is still relayed"), relayed).await;
    }
    // Signaling never noticed: same peers, and bob never lost alice.
    assert_eq!(eval(&alice, "document.body.dataset.peerId").await, ids.0);
    assert_eq!(eval(&bob, "document.body.dataset.peerId").await, ids.1);
    assert_eq!(
        eval(&bob, "window.seen.every(t => t.includes('alice'))").await,
        Value::Bool(true)
    );
    server.stop().await;
}

const SECRET: &str = "a-long-test-secret-of-32-bytes-or-more!";

/// A join token for `room`, made out to `name`, valid for `ttl_s` seconds
/// (negative: already expired), signed with `secret`.
fn token(secret: &str, room: &str, name: &str, ttl_s: i64) -> String {
    let exp = signaling::auth::now_unix() as i64 + ttl_s;
    signaling::auth::Auth::new(secret)
        .sign(&serde_json::json!({"room": room, "sub": name, "exp": exp}))
}

/// Opens `url` and waits for the page's script to have run.
async fn open(browser: &Browser, url: &str) -> Page {
    let page = browser.new_page(url).await.expect("page");
    until(
        &page,
        "page loaded",
        "document.readyState === 'complete' && !!window.call",
    )
    .await;
    page
}

async fn href(page: &Page) -> String {
    eval(page, "location.href")
        .await
        .as_str()
        .expect("href")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_links_with_a_token_join_a_secured_server_and_the_token_leaves_the_address_bar() {
    let server = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    // alice's socket goes through a proxy, to be cut: her resume needs the token too.
    let proxy = signaling_e2e::proxy::Proxy::start(server.addr).await;
    let browser = chromium().await;
    let room = format!("webt-{}", signaling::ids::random_hex(6));
    let (ta, tb) = (
        token(SECRET, &room, "alice", 3600),
        token(SECRET, &room, "bob", 3600),
    );
    // The form `signaling token` prints (token in the fragment), and the query form.
    let alice = open(
        &browser,
        &format!("http://{}/?room={room}#token={ta}", proxy.addr),
    )
    .await;
    let bob = open(
        &browser,
        &format!("http://{}/?room={room}&token={tb}&relay=0", server.addr),
    )
    .await;
    for (page, tok, rest) in [(&alice, &ta, ""), (&bob, &tb, "&relay=0")] {
        let url = href(page).await;
        assert!(
            !url.contains(tok.as_str()) && !url.contains("token"),
            "token left in {url}"
        );
        assert!(
            url.ends_with(&format!("/?room={room}{rest}")),
            "room and the rest kept: {url}"
        );
    }
    // The invitation's name fills the form.
    assert_eq!(
        eval(&alice, "document.getElementById('name').value").await,
        "alice"
    );

    for page in [&alice, &bob] {
        eval(
            page,
            "(() => { document.querySelector('#join button').click(); return true; })()",
        )
        .await;
        until(
            page,
            "joined with the token",
            "!!document.body.dataset.peerId",
        )
        .await;
    }
    until(&alice, "alice sees bob", "[...document.querySelectorAll('#presence li')].some(li => li.textContent.startsWith('bob'))").await;
    until(&bob, "bob sees alice", "[...document.querySelectorAll('#presence li')].some(li => li.textContent.startsWith('alice'))").await;
    until(&alice, "alice decodes bob's video", FRAMES).await;
    until(&bob, "bob decodes alice's video", FRAMES).await;
    for page in [&alice, &bob] {
        let url = href(page).await;
        assert!(
            !url.contains("token"),
            "no token back in the address after joining: {url}"
        );
    }
    // "Copy invite link" shares neither alice's token nor a link that
    // would admit nobody: it says how guests are invited.
    eval(&alice, "document.getElementById('copy').click()").await;
    until(
        &alice,
        "the copy button explains secured invites",
        "document.getElementById('status').textContent.includes('signaling token --room')",
    )
    .await;

    // Dropped and back: the resume carries the token, so the server lets it in.
    let id = eval(&alice, "document.body.dataset.peerId").await;
    eval(&bob, RECORD_PRESENCE).await;
    proxy.cut();
    until(
        &alice,
        "alice notices the drop",
        "document.getElementById('status').textContent.startsWith('Connection lost')",
    )
    .await;
    until(
        &alice,
        "alice is back in the room",
        "document.getElementById('status').textContent.startsWith('In room')",
    )
    .await;
    assert_eq!(
        eval(&alice, "document.body.dataset.peerId").await,
        id,
        "resumed"
    );
    assert_eq!(
        eval(&bob, "window.seen.every(t => t.includes('alice'))").await,
        Value::Bool(true),
        "bob never lost alice"
    );
    until(&bob, "bob still decodes alice", FRAMES).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_expired_invite_is_refused_in_plain_words_without_reconnecting() {
    let server = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let browser = chromium().await;
    let room = format!("webu-{}", signaling::ids::random_hex(6));
    let refused = "document.getElementById('error').textContent.includes('invite link is invalid or has expired') && !document.getElementById('error').hidden";
    let cases = [
        (
            "signed with another secret",
            format!(
                "#token={}",
                token("another-secret-of-32-bytes-or-more!!!", &room, "eve", 3600)
            ),
        ),
        (
            "expired",
            format!("#token={}", token(SECRET, &room, "eve", -60)),
        ),
        (
            "for another room",
            format!("&token={}", token(SECRET, "elsewhere", "eve", 3600)),
        ),
    ];
    for (what, tail) in cases {
        let before = server.metric("signaling_connections_total").await;
        let page = open(
            &browser,
            &format!("http://{}/?room={room}{tail}", server.addr),
        )
        .await;
        eval(
            &page,
            "(() => { document.querySelector('#join button').click(); return true; })()",
        )
        .await;
        until(
            &page,
            &format!("a token {what} is refused in plain words"),
            refused,
        )
        .await;
        until(
            &page,
            "the join form is back",
            "getComputedStyle(document.getElementById('join')).display !== 'none'",
        )
        .await;
        // A page that kept trying would have connected again by now (its
        // first retries come after 0.2, 0.4 and 0.8 s).
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            server.metric("signaling_connections_total").await - before,
            1,
            "a token {what}: one connection, no reconnecting"
        );
        assert_eq!(
            eval(
                &page,
                "window.call.state.ws.readyState === WebSocket.CLOSED"
            )
            .await,
            Value::Bool(true),
            "a token {what}: the socket is closed"
        );
        page.close().await.expect("close");
    }
    server.stop().await;
}

/// The Content-Security-Policy the server and the nginx front send with the page.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Runs before any of the page's own scripts: every CSP violation the
/// document meets lands in `window.cspViolations`.
const RECORD_CSP: &str = "window.cspViolations = []; document.addEventListener('securitypolicyviolation', e => window.cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`));";

/// Opens `url` with CSP violations recorded from the first byte.
async fn open_watching_csp(browser: &Browser, url: &str) -> Page {
    let page = browser.new_page("about:blank").await.expect("page");
    page.evaluate_on_new_document(RECORD_CSP)
        .await
        .expect("script before the page's");
    page.goto(url).await.expect("navigate");
    page
}

/// The response head of `GET path` (status line and headers, lower-cased names).
async fn response_head(addr: std::net::SocketAddr, path: &str) -> Vec<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("response");
    let text = String::from_utf8_lossy(&buf);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_works_under_the_strict_content_security_policy() {
    let server = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    for path in ["/", "/app.js", "/style.css"] {
        let head = response_head(server.addr, path).await;
        let csp: Vec<&str> = head
            .iter()
            .filter(|(k, _)| k == "content-security-policy")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(csp, [CSP], "{path} is served with the strict CSP");
    }
    let browser = chromium().await;
    let room = format!("webc-{}", signaling::ids::random_hex(6));
    let invite = |name: &str| {
        format!(
            "http://{}/?room={room}#token={}",
            server.addr,
            token(SECRET, &room, name, 3600)
        )
    };
    let alice = open_watching_csp(&browser, &invite("alice")).await;
    let bob = open_watching_csp(&browser, &invite("bob")).await;
    for page in [&alice, &bob] {
        until(
            page,
            "page loaded",
            "document.readyState === 'complete' && !!window.call",
        )
        .await;
        assert_eq!(
            eval(page, "Array.isArray(window.cspViolations)").await,
            Value::Bool(true),
            "violations are being recorded"
        );
        eval(
            page,
            "(() => { document.querySelector('#join button').click(); return true; })()",
        )
        .await;
        until(page, "joined", "!!document.body.dataset.peerId").await;
    }
    // The WebSocket (connect-src 'self'), the camera streams (media-src), the
    // stylesheet and the module all passed: the call runs and is laid out.
    until(&alice, "alice decodes bob's video", FRAMES).await;
    until(&bob, "bob decodes alice's video", FRAMES).await;
    for page in [&alice, &bob] {
        until(
            page,
            "the stylesheet applies",
            "getComputedStyle(document.getElementById('call')).display === 'grid'",
        )
        .await;
        // Exercise the controls (handlers attached from the module, not inline).
        eval(
            page,
            "(() => { document.getElementById('mute').click(); document.getElementById('cam').click(); return true; })()",
        )
        .await;
    }
    until(
        &alice,
        "alice sees bob muted",
        "[...document.querySelectorAll('#presence li')].some(li => li.dataset.muted === 'true')",
    )
    .await;
    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        assert_eq!(
            eval(page, "window.cspViolations").await,
            serde_json::json!([]),
            "{who}'s page broke none of the CSP"
        );
    }

    // The recording is not blind: the same page with an inline script and an
    // inline style, served with the same header, is caught on both.
    let dir = std::env::temp_dir().join(format!("sig-web-csp-{}", signaling::ids::random_hex(4)));
    std::fs::create_dir_all(&dir).expect("dir");
    let web = signaling_e2e::workspace_root().join("client/web");
    for f in ["app.js", "style.css"] {
        std::fs::copy(web.join(f), dir.join(f)).expect("copy");
    }
    let html = std::fs::read_to_string(web.join("index.html"))
        .expect("index.html")
        .replace(
            "<body>",
            "<body><p style=\"color: red\">inline</p><script>window.inlineRan = true;</script>",
        );
    std::fs::write(dir.join("index.html"), html).expect("write");
    let tainted = TestServer::start(|c| c.web_root = Some(dir.clone())).await;
    let page = open_watching_csp(&browser, &format!("http://{}/", tainted.addr)).await;
    until(
        &page,
        "both inline pieces are reported",
        "window.cspViolations.some(v => v.startsWith('script-src')) && window.cspViolations.some(v => v.startsWith('style-src'))",
    )
    .await;
    assert_eq!(
        eval(&page, "window.inlineRan === undefined").await,
        Value::Bool(true),
        "the inline script was blocked"
    );
    tainted.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}

/// An admin API request (`auth`: an `Authorization` header value); panics
/// unless it answers `status`.
async fn admin(
    addr: std::net::SocketAddr,
    auth: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    let body = body.map(|b| b.to_string());
    let resp =
        signaling_e2e::client::http_request(addr, method, path, &headers, body.as_deref()).await;
    assert_eq!(resp.status, status, "{method} {path}: {resp:?}");
    serde_json::from_str(&resp.body).unwrap_or(Value::Null)
}

/// The text of the first element `selector` matches on `page`, as JS.
fn text_of(selector: &str) -> String {
    format!("(document.querySelector('{selector}') || {{textContent: ''}}).textContent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_removed_by_the_backend_says_so_and_does_not_reconnect() {
    let server = TestServer::start(|_| {}).await;
    let base = format!("http://{}", server.addr);
    let browser = chromium().await;
    let room = format!("webk-{}", signaling::ids::random_hex(6));
    let alice = join(&browser, &base, &room, "alice").await;
    let bob = join(&browser, &base, &room, "bob").await;
    until(
        &alice,
        "alice sees bob",
        "document.querySelectorAll('#presence li').length === 1",
    )
    .await;
    let alice_id = eval(&alice, "document.body.dataset.peerId").await;
    let bob_id = eval(&bob, "document.body.dataset.peerId").await;
    let bob_id = bob_id.as_str().expect("bob's id");
    let before = server.metric("signaling_connections_total").await;

    let kick = format!("/api/rooms/{room}/peers/{bob_id}");
    admin(server.addr, None, "DELETE", &kick, None, 204).await;
    let said = "document.getElementById('error').textContent === 'You were removed from the room.' && !document.getElementById('error').hidden";
    until(&bob, "bob's page says he was removed", said).await;
    until(
        &bob,
        "the join form is back",
        "getComputedStyle(document.getElementById('join')).display !== 'none'",
    )
    .await;
    until(
        &alice,
        "bob left alice's list",
        "document.querySelectorAll('#presence li').length === 0",
    )
    .await;
    // A page that came back would have by now (its first retries come
    // after 0.2, 0.4 and 0.8 s): a new connection, and a new member.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.metric("signaling_connections_total").await,
        before,
        "no new connection"
    );
    let listed = signaling_e2e::server::api_room(server.addr, &room).await;
    assert_eq!(
        listed,
        [alice_id.as_str().expect("alice's id")],
        "no member for bob"
    );
    assert_eq!(eval(&bob, said).await, Value::Bool(true), "still said");

    // Closing the room is final too, and says so.
    admin(
        server.addr,
        None,
        "DELETE",
        &format!("/api/rooms/{room}"),
        None,
        200,
    )
    .await;
    until(
        &alice,
        "alice's page says the room was closed",
        "document.getElementById('error').textContent === 'The room was closed.'",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        signaling_e2e::server::api_room(server.addr, &room).await,
        Vec::<String>::new(),
        "alice did not come back"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_s_notices_topic_and_names_and_verified_identities_show_on_the_page() {
    let server = TestServer::start(|c| c.auth_secret = Some(SECRET.into())).await;
    let exp = signaling::auth::now_unix() + 600;
    let admin_token = format!(
        "Bearer {}",
        signaling::auth::Auth::new(SECRET).sign(&serde_json::json!({"admin": true, "exp": exp}))
    );
    let auth = Some(admin_token.as_str());
    let browser = chromium().await;
    let room = format!("webn-{}", signaling::ids::random_hex(6));
    let invite = |sub: &str| {
        format!(
            "http://{}/?room={room}#token={}",
            server.addr,
            token(SECRET, &room, sub, 3600)
        )
    };
    let alice = join_at(&browser, &invite("alice"), "alice").await;
    let meta = serde_json::json!({"topic": "Standup"});
    let path = format!("/api/rooms/{room}/meta");
    admin(server.addr, auth, "PUT", &path, Some(meta), 200).await;
    let topic = format!("{} === 'Topic: Standup'", text_of("#topic"));
    until(&alice, "alice sees the topic (room-updated)", &topic).await;
    // bob's display name is not his verified identity: both show. His
    // invitation forbids `update` (grants.update_meta false).
    let bob_token = signaling::auth::Auth::new(SECRET).sign(&serde_json::json!({
        "room": room, "sub": "bob@example", "exp": exp, "grants": {"update_meta": false}
    }));
    let bob_invite = format!("http://{}/?room={room}#token={bob_token}", server.addr);
    let bob = join_at(&browser, &bob_invite, "Bob").await;
    until(&bob, "bob sees the topic (joined.room_meta)", &topic).await;
    until(
        &alice,
        "alice sees bob verified",
        &format!(
            "{} === 'verified: bob@example'",
            text_of("#presence li .verified")
        ),
    )
    .await;
    until(
        &bob,
        "bob sees alice verified",
        &format!("{} === 'verified'", text_of("#presence li .verified")),
    )
    .await;

    let path = format!("/api/rooms/{room}/messages");
    let body = serde_json::json!({"data": {"text": "Break in 5 minutes"}});
    admin(server.addr, auth, "POST", &path, Some(body), 202).await;
    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        let shown = format!(
            "{} === 'Break in 5 minutes' && !document.getElementById('notices').hidden",
            text_of("#notice-list li")
        );
        until(page, &format!("{who} sees the server's notice"), &shown).await;
    }

    // The backend renames alice: her page and bob's show the new name.
    let id = eval(&alice, "document.body.dataset.peerId").await;
    let path = format!("/api/rooms/{room}/peers/{}", id.as_str().expect("id"));
    let body = serde_json::json!({"name": "Alice B."});
    admin(server.addr, auth, "PATCH", &path, Some(body), 200).await;
    until(
        &alice,
        "alice's status has her new name",
        "document.getElementById('status').textContent.endsWith('as Alice B.')",
    )
    .await;
    until(&bob, "bob lists alice's new name", "[...document.querySelectorAll('#presence li')].some(li => li.textContent.startsWith('Alice B.'))").await;

    // bob mutes: the server refuses his `update`, the page says so, and the
    // call goes on (a refused update is not a refused join).
    eval(
        &bob,
        "(() => { document.getElementById('mute').click(); return true; })()",
    )
    .await;
    until(&bob, "bob is told his update was refused", "document.getElementById('error').textContent.startsWith('Your invitation does not let you') && !document.getElementById('error').hidden").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        eval(&bob, "document.getElementById('status').textContent.startsWith('In room') && getComputedStyle(document.getElementById('join')).display === 'none'").await,
        Value::Bool(true),
        "bob is still in the call"
    );
    until(&alice, "alice still decodes bob", FRAMES).await;
    server.stop().await;
}
