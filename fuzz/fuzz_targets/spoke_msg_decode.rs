//! Whatever bytes a spoke sends, decoding them as a `SpokeMsg` never panics, and a
//! message that decodes re-encodes to bytes that decode to the same message.
#![no_main]

use flotilla_proto::v1::SpokeMsg;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = SpokeMsg::decode(data) {
        let again = SpokeMsg::decode(msg.encode_to_vec().as_slice()).expect("re-decodes");
        assert_eq!(msg, again);
    }
});
