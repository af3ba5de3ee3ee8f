//! scratch
#[cfg(test)]
mod t {
    #[test]
    fn x() {
        let mut o = serde_saphyr::Options::default();
        o.legacy_octal_numbers = true;
        for src in ["a: 1\nb: [\n", "a: 1\na: 2\n", "a: b: c\n", "mode: 0644\nv: yes\nn: ~\nf: 1.0\nt: 2021-01-01\n", "# only\n", "", "--- |\n  hello\n"] {
            match serde_saphyr::from_str_with_options::<serde_json::Value>(src, o.clone()) {
                Ok(v) => println!("OK {v:?}"),
                Err(e) => { let l = e.location(); println!("ERR {:?} || {}", l.map(|l| (l.line(), l.column())), e.without_snippet()); }
            }
        }
    }
}
