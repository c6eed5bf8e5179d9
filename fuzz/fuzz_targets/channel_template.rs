//! The `[[watch]]` `tail_channel` template (`{stem}`, `{name}`): a template
//! that parses is exactly the one written back from its parts.
#![no_main]

use crier_server::fuzzing::channel_template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(written) = channel_template(text) {
        assert_eq!(written, text);
        assert_eq!(channel_template(&written), Ok(written.clone()));
    }
});
