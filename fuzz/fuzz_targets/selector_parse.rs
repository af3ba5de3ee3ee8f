//! Label selectors and label lists from arbitrary text: never panic, and whatever
//! parses prints back to something that parses to the same selector.
#![no_main]

use flotilla_model::{LabelSelector, parse_labels};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_labels(text);
    if let Ok(sel) = text.parse::<LabelSelector>() {
        let again: LabelSelector = sel
            .to_string()
            .parse()
            .expect("a parsed selector's display form parses");
        assert_eq!(sel, again);
    }
});
