//! The frames the codec bench and the `decode_cost` example decode: what a
//! call sends most (offers, candidates) and a join or update with a 1 KB `meta`.

/// A 2 KB offer shaped like a browser's: a `\r\n` escape every line, and
/// escapes are what decoding a string costs.
pub fn offer() -> String {
    let lines = [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS stream",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Hq4d",
        "a=ice-pwd:0nE1oRyqL8gBvxXyKsJ3Uq6m",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 7B:8C:1F:2A:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
    ];
    let mut sdp = String::new();
    for line in lines.iter().cycle() {
        if sdp.len() + line.len() > 2000 {
            break;
        }
        sdp.push_str(line);
        sdp.push_str("\\r\\n");
    }
    format!(r#"{{"type":"offer","to":"4f2a9c1e0b7d","sdp":"{sdp}"}}"#)
}

pub const CANDIDATE: &str = r#"{"type":"candidate","to":"4f2a9c1e0b7d","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host generation 0","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#;

pub const JOIN: &str =
    r#"{"type":"join","room":"standup","name":"Ada","meta":{"muted":false,"camera":true},"id":7}"#;

/// About 1 KB of application `meta`: what a call page might publish about
/// its user (flags, numbers, a short status with a non-ASCII escape, a
/// list of tracks).
pub fn meta_1k() -> String {
    let mut tracks = Vec::new();
    for i in 0..8 {
        tracks.push(format!(
            r#"{{"id":"track-{i:04}","kind":"{}","muted":{},"label":"Camera {i} (front)","width":1280,"height":720,"fps":29.97}}"#,
            if i % 2 == 0 { "video" } else { "audio" },
            i % 3 == 0
        ));
    }
    format!(
        r#"{{"muted":false,"camera":true,"hand":null,"status":"in a meeting \u2014 back at 3","avatar":"https://example.invalid/a/7f3e2b.png","joined_via":"invite","volume":0.85,"tracks":[{}]}}"#,
        tracks.join(",")
    )
}

/// A join carrying [`meta_1k`].
pub fn join_meta_1k() -> String {
    format!(
        r#"{{"type":"join","room":"standup","name":"Ada","meta":{},"id":7}}"#,
        meta_1k()
    )
}

/// An update carrying [`meta_1k`].
pub fn update_meta_1k() -> String {
    format!(r#"{{"type":"update","meta":{},"id":8}}"#, meta_1k())
}
