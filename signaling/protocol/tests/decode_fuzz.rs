//! Property test of the decoder: no input panics, every refusal is
//! `bad_message`, and relaying an accepted frame yields valid JSON.

use proptest::prelude::*;
use signaling_protocol::{ErrorCode, Request, decode, reply};

fn json_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z\\\\\"\u{e9}\u{1f600} ]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("type"),
                        Just("id"),
                        Just("room"),
                        Just("to"),
                        Just("sdp"),
                        Just("candidate"),
                        Just("data"),
                        Just("meta"),
                        Just("name"),
                        Just("resume"),
                        Just("token"),
                        Just("x")
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| format!(
                "{{{}}}",
                kv.iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ]
    })
}

fn typed_message() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("join"),
            Just("offer"),
            Just("answer"),
            Just("candidate"),
            Just("message"),
            Just("update"),
            Just("leave"),
            Just("ping"),
            Just("bogus")
        ],
        json_like(),
    )
        .prop_map(|(ty, rest)| match rest.strip_prefix('{') {
            Some(tail) if tail != "}" => format!("{{\"type\":\"{ty}\",{tail}"),
            _ => format!("{{\"type\":\"{ty}\"}}"),
        })
}

fn check(frame: &str) {
    match decode(frame) {
        Ok(env) => {
            if let Request::Relay { kind, payload, .. } = env.request {
                let out = reply::relayed(kind, "peer", payload.get());
                assert!(
                    serde_json::from_str::<serde_json::Value>(&out).is_ok(),
                    "{out}"
                );
            }
        }
        Err(e) => assert_eq!(e.code, ErrorCode::BadMessage, "{frame}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        check(&s);
    }

    #[test]
    fn json_shaped_input_never_panics(s in json_like()) {
        check(&s);
    }

    #[test]
    fn typed_messages_never_panic(s in typed_message()) {
        check(&s);
    }

    #[test]
    fn truncated_messages_never_panic(s in typed_message(), cut in 0usize..64) {
        let mut end = s.len().saturating_sub(cut);
        while !s.is_char_boundary(end) { end -= 1; }
        check(&s[..end]);
    }
}
