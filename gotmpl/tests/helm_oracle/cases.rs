//! The oracle's cases: `OK` templates must render to helm's bytes; `FAIL` templates must
//! fail in both (the flag says whether the messages must match too). All read `VALUES`.

pub const VALUES: &str = r#"
name: demo
replicas: 3
big: 1000000
bigger: 123456789
ratio: 0.25
tiny: 0.00001
neg: -7
zero: 0
enabled: true
disabled: false
empty: ""
nothing: null
port: 8080
version: "1.2.3"
numstr: "42"
list: [a, b, c]
nums: [3, 1, 2]
mixed: [1, "two", true, null, 2.5]
emptylist: []
dupes: [a, b, a, c, b]
map:
  b: 2
  a: 1
  c: "three"
emptymap: {}
nested:
  deep:
    deeper:
      value: found
  list:
    - name: one
      port: 80
    - name: two
      port: 443
labels:
  app: demo
  tier: backend
  app.kubernetes.io/name: demo
image:
  repository: nginx
  tag: "1.25"
  pullPolicy: IfNotPresent
resources:
  limits:
    cpu: 500m
    memory: 128Mi
text: "line one\nline two\n"
quoted: 'say "hi"'
spaces: "  padded  "
special: "a: b # c"
yesword: "yes"
url: "https://example.com/a b?c=d&e=f"
html: "<b>bold</b> & 'q'"
tpl: "{{ .Values.name }}-{{ .Release.Name }}"
json: '{"a": 1, "b": [true, null]}'
yaml: "a: 1\nb:\n  - x\n  - y\n"
keys:
  a10: 1
  a9: 2
  B: 3
  _x: 4
  "1": 5
floats: [1.5, 2.0, 1e21, 0.000001]
unicode: "héllo wörld"
multi: "first\n\nthird"
trailing: "ends with newline\n"
longline: "this is a rather long line of text that goes well past the eighty column limit of the emitter so it folds"
semver: "1.21.3-eks.1"
yaml11:
  on: yes
  n: no
  y: 0644
  octal: 0o17
  under: 1_000
  sixty: 1:20
  ts: 2001-12-14
  quoted: "yes"
  exp: 1e3
  neg: -0x10
  anchor: &anc {a: 1, b: [x, y]}
  merged:
    <<: *anc
    b: [z]
"#;

/// Templates that must render exactly as helm renders them.
pub const OK: &[(&str, &str)] = &[
    // Text, actions, trim markers and comments.
    ("plain text", "hello world\n"),
    ("field", "{{ .Values.name }}"),
    ("nested field", "{{ .Values.nested.deep.deeper.value }}"),
    ("missing field", "[{{ .Values.missing }}]"),
    (
        "missing nested through nil map",
        "[{{ .Values.emptymap.x }}]",
    ),
    ("trim left", "a   \n  {{- .Values.name }}"),
    ("trim right", "{{ .Values.name -}}   \n  b"),
    ("trim both", "a \n {{- .Values.name -}} \n b"),
    ("comment", "a{{/* a comment */}}b"),
    ("comment trimmed", "a \n {{- /* c */ -}} \n b"),
    ("negative number not trim", "{{-3}}"),
    ("root variable", "{{ $.Values.name }}"),
    ("dot at top", "{{ .Release.Name }}"),
    (
        "chart fields",
        "{{ .Chart.Name }}-{{ .Chart.Version }}-{{ .Chart.AppVersion }}",
    ),
    (
        "release fields",
        "{{ .Release.Namespace }} {{ .Release.IsInstall }} {{ .Release.Service }}",
    ),
    (
        "template name",
        "{{ .Template.Name }} {{ .Template.BasePath }}",
    ),
    // Printing values.
    ("int from values is float64", "{{ .Values.replicas }}"),
    ("big float", "{{ .Values.big }}"),
    ("bigger float", "{{ .Values.bigger }}"),
    ("ratio", "{{ .Values.ratio }}"),
    ("tiny", "{{ .Values.tiny }}"),
    ("negative", "{{ .Values.neg }}"),
    ("literal float", "{{ 1000000.0 }}"),
    ("literal int", "{{ 1000000 }}"),
    ("literal hex", "{{ 0x1F }}"),
    ("literal octal", "{{ 017 }}"),
    ("literal char", "{{ 'a' }}"),
    ("literal exp", "{{ 1e3 }}"),
    ("bool", "{{ .Values.enabled }} {{ .Values.disabled }}"),
    ("nil value", "[{{ .Values.nothing }}]"),
    ("map prints", "{{ .Values.map }}"),
    ("list prints", "{{ .Values.list }}"),
    ("mixed list prints", "{{ .Values.mixed }}"),
    ("nested map prints", "{{ .Values.nested.deep }}"),
    ("empty list prints", "{{ .Values.emptylist }}"),
    ("empty map prints", "{{ .Values.emptymap }}"),
    ("list of maps prints", "{{ .Values.nested.list }}"),
    ("floats list", "{{ .Values.floats }}"),
    ("string literal escapes", r#"{{ "tab\there\nnl" }}"#),
    ("raw string", "{{ `raw \\n string` }}"),
    // Variables.
    ("declare", "{{ $x := .Values.name }}{{ $x }}"),
    ("assign", "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}"),
    (
        "variable field",
        "{{ $v := .Values }}{{ $v.image.repository }}",
    ),
    (
        "variable in if scope",
        "{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}",
    ),
    (
        "variable shadow in with",
        "{{ $x := 1 }}{{ with .Values.name }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}",
    ),
    // if / else.
    ("if true", "{{ if .Values.enabled }}yes{{ end }}"),
    (
        "if false else",
        "{{ if .Values.disabled }}yes{{ else }}no{{ end }}",
    ),
    (
        "if else if",
        "{{ if .Values.disabled }}a{{ else if .Values.enabled }}b{{ else }}c{{ end }}",
    ),
    ("if zero", "{{ if .Values.zero }}t{{ else }}f{{ end }}"),
    (
        "if empty string",
        "{{ if .Values.empty }}t{{ else }}f{{ end }}",
    ),
    (
        "if empty list",
        "{{ if .Values.emptylist }}t{{ else }}f{{ end }}",
    ),
    (
        "if empty map",
        "{{ if .Values.emptymap }}t{{ else }}f{{ end }}",
    ),
    (
        "if missing",
        "{{ if .Values.missing }}t{{ else }}f{{ end }}",
    ),
    (
        "if with decl",
        "{{ if $x := .Values.name }}{{ $x }}{{ end }}",
    ),
    // with.
    (
        "with",
        "{{ with .Values.image }}{{ .repository }}:{{ .tag }}{{ end }}",
    ),
    (
        "with else",
        "{{ with .Values.missing }}x{{ else }}none{{ end }}",
    ),
    (
        "with else with",
        "{{ with .Values.missing }}x{{ else with .Values.name }}{{ . }}{{ end }}",
    ),
    (
        "with root inside",
        "{{ with .Values.image }}{{ $.Release.Name }}{{ end }}",
    ),
    // range.
    ("range list", "{{ range .Values.list }}[{{ . }}]{{ end }}"),
    (
        "range index",
        "{{ range $i, $v := .Values.list }}{{ $i }}={{ $v }} {{ end }}",
    ),
    (
        "range map sorted",
        "{{ range $k, $v := .Values.map }}{{ $k }}={{ $v }} {{ end }}",
    ),
    (
        "range map values",
        "{{ range .Values.map }}{{ . }},{{ end }}",
    ),
    (
        "range keys natural",
        "{{ range $k, $v := .Values.keys }}{{ $k }} {{ end }}",
    ),
    (
        "range else",
        "{{ range .Values.emptylist }}x{{ else }}empty{{ end }}",
    ),
    (
        "range nil else",
        "{{ range .Values.missing }}x{{ else }}none{{ end }}",
    ),
    ("range int", "{{ range 3 }}{{ . }}{{ end }}"),
    ("range int var", "{{ range $i := 3 }}{{ $i }}{{ end }}"),
    (
        "range break",
        "{{ range .Values.list }}{{ if eq . \"b\" }}{{ break }}{{ end }}{{ . }}{{ end }}",
    ),
    (
        "range continue",
        "{{ range .Values.list }}{{ if eq . \"b\" }}{{ continue }}{{ end }}{{ . }}{{ end }}",
    ),
    (
        "range one var",
        "{{ range $v := .Values.list }}{{ $v }}{{ end }}",
    ),
    (
        "range nested",
        "{{ range .Values.nested.list }}{{ .name }}:{{ .port }};{{ end }}",
    ),
    (
        "range with root",
        "{{ range .Values.list }}{{ $.Values.name }}{{ end }}",
    ),
    (
        "range assign outer",
        "{{ $last := \"\" }}{{ range .Values.list }}{{ $last = . }}{{ end }}{{ $last }}",
    ),
    ("range until", "{{ range until 3 }}{{ . }}{{ end }}"),
    // define / template / block / include.
    (
        "define and template",
        "{{ define \"t1\" }}T1:{{ . }}{{ end }}{{ template \"t1\" .Values.name }}",
    ),
    (
        "template no data",
        "{{ define \"t2\" }}[{{ . }}]{{ end }}{{ template \"t2\" }}",
    ),
    ("block", "{{ block \"b1\" .Values.name }}B:{{ . }}{{ end }}"),
    (
        "include",
        "{{ define \"i1\" }}I:{{ .name }}{{ end }}{{ include \"i1\" .Values }}",
    ),
    (
        "include piped",
        "{{ define \"i2\" }}x: 1\ny: 2{{ end }}{{ include \"i2\" . | nindent 2 }}",
    ),
    (
        "include indent",
        "{{ define \"i3\" }}a\nb{{ end }}{{ include \"i3\" . | indent 4 }}",
    ),
    (
        "include with dict",
        "{{ define \"i4\" }}{{ .a }}-{{ .b }}{{ end }}{{ include \"i4\" (dict \"a\" 1 \"b\" \"two\") }}",
    ),
    (
        "include keeps no value",
        "{{ define \"i5\" }}[{{ .missing }}]{{ end }}{{ include \"i5\" .Values }}",
    ),
    (
        "include recursion",
        "{{ define \"r1\" }}{{ if gt (len .) 0 }}{{ first . }}{{ include \"r1\" (rest .) }}{{ end }}{{ end }}{{ include \"r1\" .Values.list }}",
    ),
    ("tpl", "{{ tpl .Values.tpl . }}"),
    ("tpl literal", "{{ tpl \"{{ .Values.name | upper }}\" . }}"),
    (
        "tpl uses defines",
        "{{ define \"td\" }}D{{ end }}{{ tpl \"{{ include \\\"td\\\" . }}\" . }}",
    ),
    ("tpl no value", "{{ tpl \"[{{ .missing }}]\" . }}"),
    // Parentheses, pipelines, chains.
    ("paren", "{{ (.Values.name) }}"),
    ("paren chain", "{{ (.Values.image).repository }}"),
    (
        "paren pipeline",
        "{{ (printf \"%s-%s\" .Values.name \"x\") | upper }}",
    ),
    ("pipeline chain", "{{ .Values.name | upper | quote }}"),
    (
        "pipeline into printf",
        "{{ .Values.name | printf \"<%s>\" }}",
    ),
    ("dict chain", "{{ (dict \"a\" (dict \"b\" \"c\")).a.b }}"),
    ("index chain", "{{ (index .Values.nested.list 1).name }}"),
    // Builtins.
    ("and", "{{ and 1 \"a\" .Values.name }}"),
    ("and short", "{{ and 0 .Values.missing.x }}"),
    ("or", "{{ or .Values.empty .Values.zero \"fallback\" }}"),
    ("or short", "{{ or 1 .Values.missing.x }}"),
    ("or last", "{{ or 0 \"\" }}"),
    ("not", "{{ not .Values.enabled }} {{ not .Values.empty }}"),
    ("len string", "{{ len .Values.name }}"),
    ("len list", "{{ len .Values.list }}"),
    ("len map", "{{ len .Values.map }}"),
    ("index list", "{{ index .Values.list 1 }}"),
    (
        "index map",
        "{{ index .Values.labels \"app.kubernetes.io/name\" }}",
    ),
    (
        "index multi",
        "{{ index .Values.nested \"deep\" \"deeper\" \"value\" }}",
    ),
    ("index missing key", "[{{ index .Values.map \"zz\" }}]"),
    ("index string", "{{ index \"abc\" 1 }}"),
    ("print", "{{ print 1 2 \"a\" \"b\" 3 }}"),
    ("print floats", "{{ print .Values.replicas .Values.ratio }}"),
    ("println", "{{ println \"a\" 1 }}"),
    ("printf s", "{{ printf \"%s\" .Values.name }}"),
    ("printf d int", "{{ printf \"%d\" 42 }}"),
    ("printf d float", "{{ printf \"%d\" .Values.replicas }}"),
    (
        "printf v",
        "{{ printf \"%v %v %v\" .Values.replicas .Values.map .Values.list }}",
    ),
    ("printf q", "{{ printf \"%q\" .Values.quoted }}"),
    ("printf t", "{{ printf \"%t\" .Values.enabled }}"),
    (
        "printf f",
        "{{ printf \"%f %.2f %.0f\" .Values.ratio .Values.ratio 2.5 }}",
    ),
    ("printf x", "{{ printf \"%x %X\" 255 \"hi\" }}"),
    (
        "printf width",
        "[{{ printf \"%5s|%-5s|%5d\" \"ab\" \"cd\" 42 }}]",
    ),
    ("printf plus", "{{ printf \"%+v %+d\" 5 5 }}"),
    ("printf percent", "{{ printf \"100%%\" }}"),
    ("printf missing", "{{ printf \"%s %s\" \"a\" }}"),
    ("printf extra", "{{ printf \"%s\" \"a\" \"b\" }}"),
    ("printf s of int", "{{ printf \"%s\" 5 }}"),
    (
        "printf nil",
        "{{ printf \"%v|%s\" .Values.nothing .Values.nothing }}",
    ),
    ("printf e g", "{{ printf \"%e %g\" 123456.789 0.000012 }}"),
    ("printf zero pad", "{{ printf \"%05d %03d\" 42 -7 }}"),
    ("eq", "{{ eq .Values.name \"demo\" }} {{ eq 1 2 }}"),
    ("eq multi", "{{ eq .Values.name \"a\" \"b\" \"demo\" }}"),
    ("eq float values", "{{ eq .Values.replicas 3.0 }}"),
    ("eq nil", "{{ eq .Values.nothing .Values.missing }}"),
    ("eq nil string", "{{ eq .Values.missing \"x\" }}"),
    ("ne", "{{ ne .Values.name \"x\" }}"),
    (
        "lt gt",
        "{{ lt 1 2 }} {{ gt 1 2 }} {{ le 2 2 }} {{ ge 1 2 }}",
    ),
    ("lt strings", "{{ lt \"a\" \"b\" }}"),
    ("lt floats", "{{ lt .Values.ratio .Values.replicas }}"),
    ("html", "{{ html .Values.html }}"),
    ("js", "{{ js .Values.html }}"),
    ("urlquery", "{{ urlquery .Values.url }}"),
    // Sprig strings.
    ("trim", "[{{ trim .Values.spaces }}]"),
    ("trimAll", "{{ trimAll \"$\" \"$$5.00$\" }}"),
    ("trimPrefix", "{{ trimPrefix \"v\" \"v1.2\" }}"),
    ("trimSuffix", "{{ trimSuffix \".yaml\" \"a.yaml\" }}"),
    ("upper lower", "{{ upper \"abc\" }} {{ lower \"ABC\" }}"),
    (
        "title untitle",
        "{{ title \"hello world-foo bar_baz\" }} {{ untitle \"Hello World\" }}",
    ),
    ("replace", "{{ replace \"a\" \"b\" \"banana\" }}"),
    ("repeat", "{{ repeat 3 \"ab\" }}"),
    ("substr", "{{ substr 1 3 \"hello\" }}"),
    ("substr out", "{{ substr 2 99 \"hello\" }}"),
    (
        "trunc",
        "{{ trunc 3 \"hello\" }} {{ trunc -2 \"hello\" }} {{ trunc 10 \"hi\" }}",
    ),
    ("abbrev", "{{ abbrev 5 \"hello world\" }}"),
    ("abbrevboth", "{{ abbrevboth 5 10 \"1234 5678 9123\" }}"),
    ("contains", "{{ contains \"ll\" \"hello\" }}"),
    (
        "hasPrefix hasSuffix",
        "{{ hasPrefix \"he\" \"hello\" }} {{ hasSuffix \"lo\" \"hello\" }}",
    ),
    (
        "quote",
        "{{ quote .Values.name }} {{ quote .Values.quoted }}",
    ),
    ("quote number", "{{ .Values.replicas | quote }}"),
    ("quote many", "{{ quote \"a\" 1 .Values.nothing \"b\" }}"),
    ("squote", "{{ squote .Values.name }} {{ squote 1.5 }}"),
    ("cat", "{{ cat \"a\" 1 .Values.nothing \"b\" }}"),
    ("indent", "{{ indent 2 .Values.text }}"),
    ("nindent", "x:{{ nindent 4 \"a\\nb\" }}"),
    ("wrap", "{{ wrap 10 \"the quick brown fox jumps over\" }}"),
    ("wrapWith", "{{ wrapWith 5 \"\\t\" \"Hello World\" }}"),
    (
        "plural",
        "{{ plural \"one\" \"many\" 1 }} {{ plural \"one\" \"many\" 2 }}",
    ),
    (
        "snakecase",
        "{{ snakecase \"FirstName\" }} {{ snakecase \"HTTPServer\" }}",
    ),
    (
        "camelcase",
        "{{ camelcase \"http_server\" }} {{ camelcase \"some-thing\" }}",
    ),
    (
        "kebabcase",
        "{{ kebabcase \"FirstName\" }} {{ kebabcase \"ABCWord\" }}",
    ),
    ("swapcase", "{{ swapcase \"Hello World\" }}"),
    ("initials", "{{ initials \"First Try\" }}"),
    ("nospace", "{{ nospace \"a b  c\" }}"),
    (
        "split",
        "{{ $s := split \"$\" \"a$b$c\" }}{{ $s._0 }}{{ $s._2 }}",
    ),
    ("splitList", "{{ splitList \",\" \"a,b,c\" }}"),
    ("splitn", "{{ $s := splitn \"$\" 2 \"a$b$c\" }}{{ $s._1 }}"),
    ("join", "{{ join \",\" .Values.list }}"),
    ("join mixed", "{{ join \"-\" .Values.mixed }}"),
    ("sortAlpha", "{{ sortAlpha .Values.dupes }}"),
    ("toString", "{{ toString 5 }} {{ toString .Values.ratio }}"),
    ("toStrings", "{{ toStrings .Values.mixed }}"),
    ("atoi", "{{ atoi \"42\" }} {{ atoi \"x\" }}"),
    (
        "int",
        "{{ int \"42\" }} {{ int .Values.ratio }} {{ int .Values.replicas }}",
    ),
    ("int64", "{{ int64 \"0x10\" }}"),
    ("float64", "{{ float64 \"1.5\" }} {{ float64 3 }}"),
    (
        "regexMatch",
        "{{ regexMatch \"^[a-z]+$\" \"abc\" }} {{ regexMatch \"^[a-z]+$\" \"Abc\" }}",
    ),
    ("regexFind", "{{ regexFind \"[0-9]+\" \"abc123def456\" }}"),
    (
        "regexFindAll",
        "{{ regexFindAll \"[0-9]\" \"a1b2c3\" -1 }} {{ regexFindAll \"[0-9]\" \"a1b2c3\" 2 }}",
    ),
    (
        "regexReplaceAll",
        "{{ regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"${1}W\" }}",
    ),
    (
        "regexReplaceAllLiteral",
        "{{ regexReplaceAllLiteral \"a(x*)b\" \"-ab-axxb-\" \"${1}\" }}",
    ),
    ("regexSplit", "{{ regexSplit \"z+\" \"pizza\" -1 }}"),
    ("regexQuoteMeta", "{{ regexQuoteMeta \"1.2.3\" }}"),
    (
        "b64enc b64dec",
        "{{ b64enc \"hello\" }} {{ b64dec \"aGVsbG8=\" }}",
    ),
    (
        "b32enc b32dec",
        "{{ b32enc \"hello\" }} {{ b32dec \"NBSWY3DP\" }}",
    ),
    ("sha1sum", "{{ sha1sum \"hello\" }}"),
    ("sha256sum", "{{ sha256sum \"hello\" }}"),
    ("adler32sum", "{{ adler32sum \"hello\" }}"),
    // Sprig lists.
    ("list", "{{ list 1 \"a\" .Values.ratio }}"),
    (
        "first last",
        "{{ first .Values.list }} {{ last .Values.list }}",
    ),
    (
        "rest initial",
        "{{ rest .Values.list }} {{ initial .Values.list }}",
    ),
    (
        "append prepend",
        "{{ append .Values.list \"d\" }} {{ prepend .Values.list \"z\" }}",
    ),
    ("concat", "{{ concat .Values.list .Values.nums }}"),
    ("reverse", "{{ reverse .Values.list }}"),
    ("uniq", "{{ uniq .Values.dupes }}"),
    ("without", "{{ without .Values.dupes \"a\" }}"),
    (
        "has",
        "{{ has \"b\" .Values.list }} {{ has \"z\" .Values.list }}",
    ),
    ("compact", "{{ compact .Values.mixed }}"),
    (
        "slice",
        "{{ slice .Values.list 1 }} {{ slice .Values.list 0 2 }}",
    ),
    ("chunk", "{{ chunk 2 .Values.list }}"),
    ("until", "{{ until 5 }} {{ until -2 }}"),
    ("untilStep", "{{ untilStep 0 10 3 }}"),
    ("seq", "{{ seq 5 }} {{ seq 2 -2 }} {{ seq 0 2 10 }}"),
    ("first empty", "[{{ first .Values.emptylist }}]"),
    // Sprig dicts.
    ("dict", "{{ dict \"b\" 2 \"a\" 1 }}"),
    ("dict odd", "{{ dict \"a\" }}"),
    (
        "get",
        "{{ get .Values.map \"a\" }} [{{ get .Values.map \"z\" }}]",
    ),
    (
        "set",
        "{{ $d := dict \"a\" 1 }}{{ $_ := set $d \"b\" 2 }}{{ $d }}",
    ),
    (
        "set shares",
        "{{ $d := dict }}{{ $e := $d }}{{ $_ := set $d \"k\" \"v\" }}{{ $e }}",
    ),
    (
        "set values",
        "{{ $_ := set .Values \"added\" \"yes\" }}{{ .Values.added }}",
    ),
    (
        "unset",
        "{{ $d := dict \"a\" 1 \"b\" 2 }}{{ $_ := unset $d \"a\" }}{{ $d }}",
    ),
    (
        "hasKey",
        "{{ hasKey .Values.map \"a\" }} {{ hasKey .Values.map \"z\" }}",
    ),
    ("keys sorted", "{{ keys .Values.map | sortAlpha }}"),
    ("values", "{{ values .Values.map | len }}"),
    (
        "pick omit",
        "{{ pick .Values.map \"a\" \"c\" }} {{ omit .Values.map \"a\" }}",
    ),
    ("pluck", "{{ pluck \"a\" .Values.map (dict \"a\" 9) }}"),
    (
        "merge",
        "{{ $d := dict \"a\" 1 \"n\" (dict \"x\" 1) }}{{ merge $d (dict \"a\" 2 \"b\" 3 \"n\" (dict \"x\" 2 \"y\" 3)) }}",
    ),
    (
        "mergeOverwrite",
        "{{ $d := dict \"a\" 1 \"n\" (dict \"x\" 1) }}{{ mergeOverwrite $d (dict \"a\" 2 \"b\" 3 \"n\" (dict \"x\" 2 \"y\" 3)) }}",
    ),
    (
        "merge empty dst value",
        "{{ merge (dict \"a\" \"\") (dict \"a\" \"x\") }}",
    ),
    (
        "mergeOverwrite lists",
        "{{ mergeOverwrite (dict \"l\" (list 1 2)) (dict \"l\" (list 3)) }}",
    ),
    (
        "deepCopy",
        "{{ $c := deepCopy .Values.map }}{{ $_ := set $c \"z\" 1 }}{{ len .Values.map }} {{ len $c }}",
    ),
    (
        "dig",
        "{{ dig \"deep\" \"deeper\" \"value\" \"def\" .Values.nested }} {{ dig \"deep\" \"nope\" \"def\" .Values.nested }}",
    ),
    // Defaults and flow.
    (
        "default",
        "{{ default \"def\" .Values.missing }} {{ default \"def\" .Values.name }}",
    ),
    ("default piped", "{{ .Values.empty | default \"def\" }}"),
    ("default zero", "{{ .Values.zero | default 5 }}"),
    ("default false", "{{ .Values.disabled | default true }}"),
    (
        "empty",
        "{{ empty .Values.empty }} {{ empty .Values.name }} {{ empty .Values.emptymap }} {{ empty 0 }}",
    ),
    (
        "coalesce",
        "{{ coalesce .Values.missing .Values.empty \"c\" }}",
    ),
    (
        "ternary",
        "{{ ternary \"yes\" \"no\" .Values.enabled }} {{ .Values.disabled | ternary \"yes\" \"no\" }}",
    ),
    ("all any", "{{ all 1 \"a\" }} {{ any 0 \"\" }}"),
    // Math.
    ("add", "{{ add 1 2 3 }} {{ add .Values.replicas 1 }}"),
    (
        "add1 sub mul div mod",
        "{{ add1 5 }} {{ sub 10 3 }} {{ mul 2 3 4 }} {{ div 10 3 }} {{ mod 10 3 }}",
    ),
    ("max min", "{{ max 1 5 3 }} {{ min 4 2 8 }}"),
    (
        "floor ceil round",
        "{{ floor 1.7 }} {{ ceil 1.2 }} {{ round 3.14159 2 }}",
    ),
    ("addf subf", "{{ addf 0.1 0.2 }} {{ subf 1.5 0.25 }}"),
    ("mulf divf", "{{ mulf 1.1 3 }} {{ divf 1 3 }}"),
    ("maxf minf", "{{ maxf 1.5 2 }} {{ minf 1.5 2 }}"),
    (
        "math on floats",
        "{{ add .Values.ratio 1 }} {{ mul .Values.replicas 2 }}",
    ),
    // Encoding and data.
    ("toJson map", "{{ toJson .Values.map }}"),
    ("toJson list", "{{ toJson .Values.mixed }}"),
    ("toJson html", "{{ toJson .Values.html }}"),
    ("toRawJson html", "{{ toRawJson .Values.html }}"),
    ("toPrettyJson", "{{ toPrettyJson .Values.nested }}"),
    ("toJson floats", "{{ toJson .Values.floats }}"),
    (
        "toJson empty",
        "{{ toJson .Values.emptymap }} {{ toJson .Values.emptylist }} {{ toJson .Values.nothing }}",
    ),
    (
        "fromJson",
        "{{ (fromJson .Values.json).a }} {{ (fromJson .Values.json).b }}",
    ),
    ("fromJson error", "{{ (fromJson \"[1]\").Error }}"),
    ("fromJsonArray", "{{ fromJsonArray \"[1, 2]\" }}"),
    ("toYaml map", "{{ toYaml .Values.map }}"),
    ("toYaml nested", "{{ toYaml .Values.nested }}"),
    (
        "toYaml resources",
        "resources:\n  {{- toYaml .Values.resources | nindent 2 }}",
    ),
    ("toYaml labels", "{{ toYaml .Values.labels }}"),
    ("toYaml keys order", "{{ toYaml .Values.keys }}"),
    (
        "toYaml strings",
        "{{ toYaml (dict \"a\" \"true\" \"b\" \"1.5\" \"c\" \"\" \"d\" \"x: y\" \"e\" \"- x\" \"f\" \"yes\" \"g\" \"0x1F\" \"h\" \"2020-01-01\" \"i\" \"~\" \"j\" \"null\") }}",
    ),
    (
        "toYaml more strings",
        "{{ toYaml (dict \"a\" \"#x\" \"b\" \"x #y\" \"c\" \"a:b\" \"d\" \"*x\" \"e\" \"@x\" \"f\" \"1:20\" \"g\" \" x\" \"h\" \"x \" \"i\" \"it's\" \"j\" \"1e3\") }}",
    ),
    (
        "toYaml multiline",
        "{{ toYaml (dict \"text\" .Values.text \"multi\" .Values.multi \"trailing\" .Values.trailing) }}",
    ),
    ("toYaml special", "{{ toYaml .Values.special }}"),
    ("toYaml unicode", "{{ toYaml .Values.unicode }}"),
    (
        "toYaml long line",
        "{{ toYaml (dict \"k\" .Values.longline) }}",
    ),
    ("toYaml list", "{{ toYaml .Values.mixed }}"),
    ("toYaml list of maps", "{{ toYaml .Values.nested.list }}"),
    ("toYaml floats", "{{ toYaml .Values.floats }}"),
    (
        "toYaml numbers",
        "{{ toYaml (dict \"a\" .Values.replicas \"b\" .Values.big \"c\" .Values.ratio \"d\" .Values.tiny \"e\" 5) }}",
    ),
    (
        "toYaml empty",
        "{{ toYaml .Values.emptymap }} {{ toYaml .Values.emptylist }} {{ toYaml .Values.nothing }}",
    ),
    ("toYaml string", "{{ toYaml .Values.name }}"),
    (
        "toYaml nested lists",
        "{{ toYaml (list (list 1 2) (list) (dict)) }}",
    ),
    ("fromYaml", "{{ (fromYaml .Values.yaml).b }}"),
    ("fromYaml roundtrip", "{{ fromYaml .Values.yaml | toYaml }}"),
    ("fromYamlArray", "{{ fromYamlArray \"- a\\n- b\" }}"),
    ("toToml", "{{ toToml .Values.image }}"),
    // Semver.
    (
        "semverCompare",
        "{{ semverCompare \">=1.20.0-0\" \"1.28.3\" }} {{ semverCompare \"^1.2\" \"2.0.0\" }}",
    ),
    (
        "semverCompare pre",
        "{{ semverCompare \">=1.20\" .Values.semver }} {{ semverCompare \">=1.20-0\" .Values.semver }}",
    ),
    (
        "semverCompare ranges",
        "{{ semverCompare \"~1.2\" \"1.2.9\" }} {{ semverCompare \"1.x\" \"1.9.9\" }} {{ semverCompare \"<1.0 || >=2.0\" \"2.1.0\" }}",
    ),
    (
        "semver fields",
        "{{ $v := semver .Values.semver }}{{ $v.Major }}.{{ $v.Minor }}.{{ $v.Patch }}-{{ $v.Prerelease }}",
    ),
    ("semver prints", "{{ semver \"v1.2\" }}"),
    // Reflection.
    (
        "typeOf",
        "{{ typeOf .Values.replicas }} {{ typeOf .Values.name }} {{ typeOf .Values.list }} {{ typeOf .Values.map }} {{ typeOf 1 }}",
    ),
    (
        "kindOf",
        "{{ kindOf .Values.list }} {{ kindOf .Values.map }} {{ kindOf .Values.enabled }}",
    ),
    (
        "kindIs typeIs",
        "{{ kindIs \"map\" .Values.map }} {{ typeIs \"string\" .Values.name }}",
    ),
    (
        "deepEqual",
        "{{ deepEqual .Values.list (list \"a\" \"b\" \"c\") }}",
    ),
    // Paths.
    (
        "paths",
        "{{ base \"a/b/c.txt\" }} {{ dir \"a/b/c.txt\" }} {{ ext \"c.tar.gz\" }} {{ clean \"a//b/../c/.\" }} {{ isAbs \"/x\" }}",
    ),
    // Helm objects.
    ("files get", "{{ .Files.Get \"files/b.txt\" }}"),
    ("files get missing", "[{{ .Files.Get \"nope\" }}]"),
    (
        "files glob",
        "{{ range $p, $_ := .Files.Glob \"files/*\" }}{{ $p }} {{ end }}",
    ),
    (
        "files as config",
        "{{ (.Files.Glob \"files/*\").AsConfig }}",
    ),
    (
        "files as secrets",
        "{{ (.Files.Glob \"files/*\").AsSecrets }}",
    ),
    (
        "files lines",
        "{{ range .Files.Lines \"files/a.txt\" }}[{{ . }}]{{ end }}",
    ),
    (
        "files glob config",
        "{{ (.Files.Glob \"config/*.yaml\").AsConfig | nindent 2 }}",
    ),
    (
        "capabilities has",
        "{{ .Capabilities.APIVersions.Has \"apps/v1\" }} {{ .Capabilities.APIVersions.Has \"nope/v9\" }}",
    ),
    ("lookup", "{{ lookup \"v1\" \"Secret\" \"ns\" \"name\" }}"),
    (
        "lookup empty",
        "{{ if (lookup \"v1\" \"Secret\" \"ns\" \"name\") }}found{{ else }}none{{ end }}",
    ),
    ("required ok", "{{ required \"need name\" .Values.name }}"),
    // Realistic chart snippets.
    (
        "labels helper",
        "{{- define \"x.labels\" -}}\napp: {{ .Chart.Name }}\nrelease: {{ .Release.Name }}\n{{- end -}}\nmetadata:\n  labels:\n    {{- include \"x.labels\" . | nindent 4 }}\n",
    ),
    (
        "fullname helper",
        "{{- define \"x.fullname\" -}}\n{{- if contains .Chart.Name .Release.Name }}\n{{- .Release.Name | trunc 63 | trimSuffix \"-\" }}\n{{- else }}\n{{- printf \"%s-%s\" .Release.Name .Chart.Name | trunc 63 | trimSuffix \"-\" }}\n{{- end }}\n{{- end -}}\nname: {{ include \"x.fullname\" . }}\n",
    ),
    (
        "deployment",
        "apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: {{ .Values.replicas }}\n  template:\n    spec:\n      containers:\n        - name: {{ .Chart.Name }}\n          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}\"\n          imagePullPolicy: {{ .Values.image.pullPolicy }}\n          ports:\n            - containerPort: {{ .Values.port }}\n          {{- with .Values.resources }}\n          resources:\n            {{- toYaml . | nindent 12 }}\n          {{- end }}\n",
    ),
    (
        "env from map",
        "env:\n{{- range $k, $v := .Values.labels }}\n  - name: {{ $k | upper | replace \".\" \"_\" | replace \"/\" \"_\" }}\n    value: {{ $v | quote }}\n{{- end }}\n",
    ),
    (
        "checksum",
        "checksum: {{ .Values.map | toYaml | sha256sum }}",
    ),
    (
        "ternary in yaml",
        "enabled: {{ ternary \"on\" \"off\" .Values.enabled | quote }}",
    ),
    // Second batch: whitespace, numbers, formatting and data edge cases.
    (
        "trim in define",
        "{{- define \"w1\" -}}\n  value\n{{- end -}}\n[{{ include \"w1\" . }}]",
    ),
    (
        "else trim",
        "{{ if .Values.disabled -}}\n  a\n{{- else -}}\n  b\n{{- end }}",
    ),
    (
        "range trim yaml",
        "items:\n{{- range .Values.list }}\n  - {{ . }}\n{{- end }}\n",
    ),
    ("multiline comment", "a\n{{- /*\n  multi\n  line\n*/ -}}\nb"),
    (
        "nested control",
        "{{ range $i, $v := .Values.nested.list }}{{ if eq $i 0 }}{{ with $v }}{{ .name }}{{ end }}{{ else }},{{ $v.port }}{{ end }}{{ end }}",
    ),
    (
        "dollar inside define",
        "{{ define \"d1\" }}{{ $.name }}{{ end }}{{ include \"d1\" .Values }}",
    ),
    (
        "variable in range body",
        "{{ range .Values.list }}{{ $u := upper . }}{{ $u }}{{ end }}",
    ),
    ("pipe order", "{{ \"a\" | printf \"%s-%s\" \"b\" }}"),
    (
        "and returns value",
        "{{ and \"x\" \"y\" }} {{ and \"x\" \"\" }} {{ or \"\" 0 }}",
    ),
    (
        "print spacing",
        "{{ print 1 2 }} {{ print \"a\" 1 }} {{ print 1 \"a\" 2 }} {{ print .Values.nothing 1 }}",
    ),
    ("html multi", "{{ html \"<a>\" 1 }}"),
    ("js special", "{{ js \"a\\nb='c'\" }}"),
    ("urlquery multi", "{{ urlquery \"a b\" \"&\" }}"),
    (
        "toJson unicode",
        "{{ toJson .Values.unicode }} {{ toJson \"tab\\there\" }}",
    ),
    (
        "quote list",
        "{{ quote .Values.list }} {{ quote .Values.map }}",
    ),
    (
        "int of exp",
        "{{ int \"1e3\" }} {{ int64 \"3.0\" }} {{ int \"-12\" }}",
    ),
    ("float64 prints", "{{ float64 3 }} {{ float64 \"2.50\" }}"),
    ("trunc multibyte", "{{ trunc 2 .Values.unicode }}"),
    (
        "regex group letters",
        "{{ regexReplaceAll \"(a)\" \"banana\" \"$1x\" }}|{{ regexReplaceAll \"(a)\" \"banana\" \"${1}x\" }}",
    ),
    (
        "semverCompare v and spaces",
        "{{ semverCompare \"> 1.2, < 2.0\" \"v1.5.0\" }} {{ semverCompare \">= 1.2 <2\" \"1.9\" }}",
    ),
    (
        "tpl with define",
        "{{ tpl \"{{ define \\\"inner\\\" }}I{{ end }}{{ include \\\"inner\\\" . }}\" . }}",
    ),
    ("tpl with values map", "{{ tpl \"{{ .name }}\" .Values }}"),
    ("dict number keys", "{{ dict 1 2 true \"x\" }}"),
    (
        "hasKey nil variable",
        "{{ $m := .Values.missing }}{{ hasKey $m \"a\" }}",
    ),
    (
        "keys of many",
        "{{ keys .Values.map (dict \"z\" 1) | sortAlpha }}",
    ),
    (
        "typeOf made",
        "{{ typeOf (dict) }} {{ typeOf (list) }} {{ typeOf .Values.nothing }}",
    ),
    ("empty object", "{{ empty .Files }}"),
    (
        "numbers print",
        "{{ 0.1 }} {{ 1.0e-7 }} {{ 2.5e10 }} {{ 123456789.0 }} {{ 100000.0 }} {{ 999999.0 }} {{ 1e6 }} {{ -0.5 }}",
    ),
    (
        "printf more verbs",
        "{{ printf \"%.3g|%8.3f|%-8.3f|%08.3f\" 3.14159 2.5 2.5 -2.5 }}",
    ),
    (
        "printf ints",
        "{{ printf \"%o %b %c %U %x\" 8 5 65 65 -255 }}",
    ),
    (
        "printf type",
        "{{ printf \"%T %T %T %T\" 1 .Values.ratio .Values.list .Values.name }}",
    ),
    (
        "printf list verb",
        "{{ printf \"%d\" (list 1 2) }} {{ printf \"%s\" .Values.list }}",
    ),
    (
        "printf map verb",
        "{{ printf \"%v\" (dict \"k\" (list 1 \"a\")) }}",
    ),
    ("printf q int", "{{ printf \"%q\" 65 }}"),
    ("printf bool as v", "{{ printf \"%v %5t|\" true false }}"),
    (
        "printf string precision",
        "{{ printf \"%.2s|%5.1s|\" \"abc\" \"xyz\" }}",
    ),
    (
        "default list",
        "{{ default (list 1) .Values.emptylist }} {{ default (dict \"a\" 1) .Values.emptymap }}",
    ),
    ("chain first upper", "{{ .Values.list | first | upper }}"),
    (
        "index nested list",
        "{{ index .Values.nested.list 0 \"port\" }}",
    ),
    ("len of int list", "{{ len (until 7) }}"),
    ("eq add literal", "{{ eq (add 1 1) 2 }}"),
    ("ne strings", "{{ ne \"a\" \"a\" }}"),
    (
        "sub negative",
        "{{ sub 1 5 }} {{ div -7 2 }} {{ mod -7 2 }}",
    ),
    (
        "round half",
        "{{ round 2.5 0 }} {{ round 2.4999 0 }} {{ round -2.5 0 }}",
    ),
    ("ceil floor types", "{{ ceil 2 }} {{ floor \"2.7\" }}"),
    ("add strings", "{{ add \"2\" \"3\" }} {{ add1 \"x\" }}"),
    (
        "max of floats",
        "{{ max .Values.ratio 0.1 }} {{ maxf .Values.ratio 0.1 }}",
    ),
    (
        "toYaml key quoting",
        "{{ toYaml (dict \"yes\" 1 \"1\" 2 \"a b\" 3 \"k: v\" 4 \"\" 5 \"null\" 6 \"-x\" 7 \"x-\" 8) }}",
    ),
    (
        "toYaml tabs and emoji",
        "{{ toYaml (dict \"t\" \"a\\tb\" \"e\" \"smile 😀\" \"cr\" \"a\\rb\") }}",
    ),
    (
        "toYaml leading space multiline",
        "{{ toYaml (dict \"a\" \"  indented\\nnext\" \"b\" \"x\\n\\n\" \"c\" \"trailing \\nspace\") }}",
    ),
    (
        "toYaml long quoted",
        "{{ toYaml (dict \"k\" \"true story: this is a rather long line of text that goes well past the eighty column limit so it folds\") }}",
    ),
    (
        "toYaml long single quoted",
        "{{ toYaml (dict \"k\" \"- this is a rather long line of text that goes well past the eighty column limit so it folds\") }}",
    ),
    (
        "toYaml long no spaces",
        "{{ toYaml (dict \"k\" (repeat 100 \"x\")) }}",
    ),
    (
        "toYaml nested list in list in map",
        "{{ toYaml (dict \"a\" (list (list 1 (dict \"b\" (list 2 3))))) }}",
    ),
    (
        "toYaml bools and nulls in list",
        "{{ toYaml (list true false .Values.nothing \"\" 0) }}",
    ),
    (
        "toYaml int64",
        "{{ toYaml (dict \"a\" (add 1 2) \"b\" (int \"7\")) }}",
    ),
    (
        "toYaml big floats",
        "{{ toYaml (list 1e20 1e21 123456789012345678.0 0.1 1.5e-7) }}",
    ),
    (
        "toYaml string numbers",
        "{{ toYaml (list \"1\" \"1.0\" \"+1\" \".5\" \"1_000\" \"0o17\" \"0b101\" \"1e3\" \"inf\" \".inf\" \"-.inf\" \"NaN\") }}",
    ),
    (
        "toYaml string words",
        "{{ toYaml (list \"y\" \"n\" \"on\" \"Off\" \"True\" \"NULL\" \"~\" \"<<\" \"=\" \"!x\" \"%x\" \"&x\" \"x&\" \"?\" \"? x\") }}",
    ),
    (
        "toYaml dates",
        "{{ toYaml (list \"2021-01-01\" \"2021-1-1\" \"2021-01-01T10:00:00Z\" \"2021-01-01 10:00:00\" \"20210101\" \"2021-13-01\") }}",
    ),
    (
        "toYaml colons",
        "{{ toYaml (list \"a:\" \"a: \" \":a\" \"http://x\" \"a:b:c\" \"10:30\" \"1:2:3\") }}",
    ),
    (
        "toYaml dashes dots",
        "{{ toYaml (list \"---\" \"...\" \"--x\" \"-\" \".\" \"-1\" \"-.5\") }}",
    ),
    (
        "toYaml quotes",
        "{{ toYaml (list \"'a'\" \"\\\"b\\\"\" \"it's\" \"say \\\"hi\\\"\") }}",
    ),
    (
        "toYaml hash",
        "{{ toYaml (list \"#\" \"a#b\" \"a #b\" \"a# b\") }}",
    ),
    (
        "toYaml brackets",
        "{{ toYaml (list \"[a]\" \"{a}\" \"a[0]\" \"a{b}\" \"a,b\" \"*\" \"|\" \">\" \"@\" \"`\") }}",
    ),
    (
        "toYaml files config",
        "{{ .Files.Glob \"config/*\" | toYaml }}",
    ),
    (
        "fromYaml types",
        "{{ $y := fromYaml \"a: 1\\nb: 1.5\\nc: yes\\nd: '1'\\ne: ~\\nf: [1, a]\" }}{{ typeOf $y.a }} {{ $y.b }} {{ $y.c }} {{ typeOf $y.d }} {{ $y.e }} {{ $y.f }}",
    ),
    (
        "fromYaml error",
        "{{ (fromYaml \"a: [\").Error | empty | not }}",
    ),
    ("fromYaml list error", "{{ fromYaml \"- a\" }}"),
    (
        "fromJson number types",
        "{{ $j := fromJson \"{\\\"a\\\": 1, \\\"b\\\": 1.5e3}\" }}{{ $j.a }} {{ $j.b }} {{ typeOf $j.a }}",
    ),
    (
        "toPrettyJson list",
        "{{ toPrettyJson (list 1 (dict \"a\" (list)) (dict)) }}",
    ),
    ("toJson files", "{{ toJson (.Files.Get \"files/a.txt\") }}"),
    ("b64dec bad", "{{ b64dec \"!!!\" }}"),
    ("split empty sep", "{{ splitList \"\" \"abc\" }}"),
    (
        "join non list",
        "{{ join \",\" \"abc\" }} {{ join \",\" 5 }}",
    ),
    (
        "sortAlpha numbers",
        "{{ sortAlpha (list 10 9 \"b\" \"a\") }}",
    ),
    ("uniq mixed", "{{ uniq (list 1 \"1\" 1 2.0 2.0) }}"),
    (
        "has number",
        "{{ has 2 (list 1 2) }} {{ has 2.0 (list 1 2) }}",
    ),
    ("without many", "{{ without .Values.list \"a\" \"c\" }}"),
    ("chunk uneven", "{{ chunk 3 (until 7) }}"),
    (
        "slice string list",
        "{{ slice (splitList \",\" \"a,b,c\") 1 }}",
    ),
    ("concat nested", "{{ concat (list 1) (list (list 2)) }}"),
    ("append to nil list", "{{ append (list) 1 }}"),
    ("pick missing", "{{ pick .Values.map \"zz\" }}"),
    ("omit all", "{{ omit .Values.map \"a\" \"b\" \"c\" }}"),
    ("deepCopy list", "{{ deepCopy .Values.mixed }}"),
    (
        "coalesce nil",
        "[{{ coalesce .Values.missing .Values.nothing }}]",
    ),
    (
        "ternary values",
        "{{ ternary 1 2 true }} {{ ternary (list 1) (dict) false }}",
    ),
    ("with list", "{{ with .Values.list }}{{ len . }}{{ end }}"),
    (
        "range map of maps",
        "{{ range $k, $v := .Values.resources }}{{ $k }}:{{ $v.cpu }};{{ end }}",
    ),
    (
        "range string list of maps index",
        "{{ range $i, $e := .Values.nested.list }}{{ $i }}{{ $e.name }}{{ end }}",
    ),
    (
        "assign in range persists",
        "{{ $n := 0 }}{{ range .Values.list }}{{ $n = add $n 1 }}{{ end }}{{ $n }}",
    ),
    (
        "nested templates share nothing",
        "{{ define \"v1\" }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x := 1 }}{{ template \"v1\" }}{{ $x }}",
    ),
    (
        "include dict root",
        "{{ define \"v2\" }}{{ .root.Values.name }}-{{ .extra }}{{ end }}{{ include \"v2\" (dict \"root\" $ \"extra\" 5) }}",
    ),
    (
        "kubeVersion semver",
        "{{ semverCompare \">=1.19-0\" .Capabilities.KubeVersion.Version }}",
    ),
    (
        "capabilities kube major",
        "{{ .Capabilities.KubeVersion.Major }}",
    ),
    (
        "lookup index",
        "{{ (lookup \"v1\" \"ConfigMap\" \"ns\" \"n\").data }}",
    ),
    (
        "required in pipeline",
        "{{ .Values.name | required \"x\" | upper }}",
    ),
    ("nindent yaml block", "data:{{ .Values.yaml | nindent 2 }}"),
    ("indent zero", "{{ indent 0 \"a\\nb\" }}"),
    ("cat spaces", "{{ cat \"a\" \"\" \"b\" }}"),
    ("replace empty old", "{{ replace \"\" \"-\" \"abc\" }}"),
    ("repeat zero", "[{{ repeat 0 \"x\" }}]"),
    ("substr negative start", "{{ substr -1 2 \"hello\" }}"),
    (
        "abbrev short",
        "{{ abbrev 3 \"hello\" }} {{ abbrev 10 \"hi\" }}",
    ),
    ("title unicode", "{{ title \"élan vital\" }}"),
    ("upper unicode", "{{ upper .Values.unicode }}"),
    (
        "snakecase more",
        "{{ snakecase \"simpleTest\" }} {{ snakecase \"already_snake\" }} {{ snakecase \"With Spaces\" }} {{ snakecase \"HTTP2Server\" }}",
    ),
    (
        "camelcase more",
        "{{ camelcase \"_leading\" }} {{ camelcase \"a__b\" }} {{ camelcase \"hello world\" }}",
    ),
    (
        "kebabcase more",
        "{{ kebabcase \"someValueHere\" }} {{ kebabcase \"Version2Release\" }}",
    ),
    (
        "wrap long word",
        "{{ wrap 5 \"supercalifragilistic is long\" }}",
    ),
    ("initials many", "{{ initials \"  alpha beta\\tgamma \" }}"),
    ("regexFind none", "[{{ regexFind \"z\" \"abc\" }}]"),
    ("regexSplit limit", "{{ regexSplit \",\" \"a,b,c,d\" 2 }}"),
    ("regexMatch invalid", "{{ regexMatch \"(\" \"a\" }}"),
    (
        "sha256 of values",
        "{{ toJson .Values.map | sha256sum | trunc 8 }}",
    ),
    (
        "b64 roundtrip unicode",
        "{{ .Values.unicode | b64enc | b64dec }}",
    ),
    ("quote escapes", "{{ quote \"a\\tb\\\\c\\u00e9\\u0001\" }}"),
    ("squote nil skip", "{{ squote .Values.nothing \"a\" }}"),
    ("toString nil", "[{{ toString .Values.nothing }}]"),
    ("toString list", "{{ toString .Values.list }}"),
    ("printf nil struct", "{{ printf \"%d\" .Values.nothing }}"),
    ("not of object", "{{ not .Files }}"),
    ("if object", "{{ if .Capabilities }}yes{{ end }}"),
    (
        "dateInZone fixed",
        "{{ dateInZone \"2006-01-02\" 0 \"UTC\" }}",
    ),
    ("date unix", "{{ date \"2006-01-02 15:04:05\" 1700000000 }}"),
    (
        "toDate format",
        "{{ toDate \"2006-01-02\" \"2017-12-31\" | date \"02/01/2006 Monday\" }}",
    ),
    (
        "unixEpoch of date",
        "{{ toDate \"2006-01-02\" \"2017-12-31\" | unixEpoch }}",
    ),
    (
        "dateModify",
        "{{ toDate \"2006-01-02\" \"2017-12-31\" | dateModify \"1.5h\" | date \"15:04\" }}",
    ),
    (
        "duration strings",
        "{{ duration \"95\" }} {{ durationRound \"90m\" }} {{ durationRound \"3s\" }}",
    ),
    (
        "semver object compare",
        "{{ (semver \"1.2.3-alpha+build\").Metadata }} {{ (semver \"1.2.3\").Original }}",
    ),
    (
        "kindIs many",
        "{{ kindIs \"float64\" .Values.ratio }} {{ kindIs \"slice\" .Values.list }} {{ kindIs \"invalid\" .Values.nothing }}",
    ),
    ("typeIsLike", "{{ typeIsLike \"string\" .Values.name }}"),
    (
        "base of url",
        "{{ base \"https://a/b/c/\" }} {{ dir \"file\" }} {{ ext \"noext\" }} {{ clean \"\" }}",
    ),
    // Library-chart idioms.
    (
        "common.util.merge",
        "{{- define \"u.merge\" -}}\n{{- $top := first . -}}\n{{- $overrides := fromYaml (include (index . 1) $top) | default (dict ) -}}\n{{- $tpl := fromYaml (include (index . 2) $top) | default (dict ) -}}\n{{- toYaml (merge $overrides $tpl) -}}\n{{- end -}}\n{{- define \"u.base\" -}}\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n  labels:\n    a: base\ndata:\n  x: \"1\"\n{{- end -}}\n{{- define \"u.over\" -}}\nmetadata:\n  labels:\n    b: over\ndata:\n  y: \"2\"\n{{- end -}}\n{{ include \"u.merge\" (list . \"u.over\" \"u.base\") }}\n",
    ),
    (
        "tplvalues.render",
        "{{- define \"t.render\" -}}\n{{- $value := typeIs \"string\" .value | ternary .value (.value | toYaml) }}\n{{- if contains \"{{\" (toJson .value) }}\n  {{- if .scope }}\n      {{- tpl (cat \"{{- with $.RelativeScope -}}\" $value \"{{- end }}\") (merge (dict \"RelativeScope\" .scope) .context) }}\n  {{- else }}\n    {{- tpl $value .context }}\n  {{- end }}\n{{- else }}\n    {{- $value }}\n{{- end }}\n{{- end -}}\na: {{ include \"t.render\" (dict \"value\" .Values.tpl \"context\" $) }}\nb:\n  {{- include \"t.render\" (dict \"value\" .Values.labels \"context\" $) | nindent 2 }}\nc: {{ include \"t.render\" (dict \"value\" \"{{ .name }}\" \"scope\" .Values \"context\" $) }}\n",
    ),
    (
        "images helper",
        "{{- define \"img\" -}}\n{{- $registry := .imageRoot.registry | default \"docker.io\" -}}\n{{- $tag := .imageRoot.tag | toString -}}\n{{- if .imageRoot.digest }}{{ printf \"%s/%s@%s\" $registry .imageRoot.repository .imageRoot.digest }}{{ else }}{{ printf \"%s/%s:%s\" $registry .imageRoot.repository $tag }}{{ end -}}\n{{- end -}}\nimage: {{ include \"img\" (dict \"imageRoot\" .Values.image) }}\n",
    ),
    (
        "capabilities api helper",
        "{{- define \"api.ingress\" -}}\n{{- if .Capabilities.APIVersions.Has \"networking.k8s.io/v1/Ingress\" -}}\nnetworking.k8s.io/v1\n{{- else if semverCompare \"<1.14-0\" .Capabilities.KubeVersion.Version -}}\nextensions/v1beta1\n{{- else -}}\nnetworking.k8s.io/v1beta1\n{{- end -}}\n{{- end -}}\napiVersion: {{ include \"api.ingress\" . }}\n",
    ),
    (
        "secret with lookup fallback",
        "{{- $existing := lookup \"v1\" \"Secret\" .Release.Namespace \"s\" -}}\n{{- $pw := \"\" -}}\n{{- if $existing }}{{ $pw = index $existing.data \"pw\" }}{{ else }}{{ $pw = \"fixed\" | b64enc }}{{ end -}}\ndata:\n  pw: {{ $pw | quote }}\n",
    ),
    (
        "range with index and dict",
        "{{- range $i, $p := .Values.nested.list }}\n- {{ toYaml (dict \"idx\" $i \"name\" $p.name \"port\" $p.port) | nindent 2 | trim }}\n{{- end }}\n",
    ),
    (
        "env list from map sorted",
        "{{- range $k := keys .Values.labels | sortAlpha }}\n- name: {{ $k }}\n  value: {{ get $.Values.labels $k | quote }}\n{{- end }}",
    ),
    (
        "checksum of include",
        "{{ define \"cfg\" }}a: {{ .Values.name }}{{ end }}checksum/config: {{ include \"cfg\" . | sha256sum }}",
    ),
    ("values read as YAML 1.1", "{{ toJson .Values.yaml11 }}"),
    (
        "fromYaml YAML 1.1",
        "{{ fromYaml \"y: n\\nyes: on\\nv: 010\\nw: 1_0\\nx: 0x1f\" | toJson }}",
    ),
    (
        "fromYaml anchors",
        "{{ fromYaml \"a: &x [1, 2]\\nb: *x\\nc:\\n  <<: {k: v}\\n  j: 1\" | toJson }}",
    ),
    (
        "binary file b64enc",
        "{{ .Files.Get \"bin/blob.dat\" | b64enc }}",
    ),
    (
        "binary file digests",
        "{{ .Files.Get \"bin/blob.dat\" | sha256sum }} {{ .Files.Get \"bin/blob.dat\" | sha1sum }} {{ .Files.Get \"bin/blob.dat\" | adler32sum }}",
    ),
    (
        "binary roundtrip",
        "{{ b64dec \"//4A\" | b64enc }} {{ b32dec \"77\" | b32enc }}",
    ),
    (
        "binary as secrets",
        "{{ (.Files.Glob \"bin/*\").AsSecrets }}",
    ),
    (
        "genCA shape",
        "{{ $ca := genCA \"x\" 30 }}{{ $ca.Cert | hasPrefix \"-----BEGIN CERTIFICATE-----\" }} {{ $ca.Key | hasPrefix \"-----BEGIN \" }} {{ $c := genSignedCert \"s\" (list \"10.0.0.1\") (list \"a.b\") 3 $ca }}{{ $c.Cert | hasSuffix \"-----END CERTIFICATE-----\\n\" }}",
    ),
    (
        "toYamlPretty",
        "{{ toYamlPretty (dict \"a\" (list 1 2 (dict \"x\" 1 \"y\" (list \"p\" \"q\"))) \"b\" \"yes\" \"c\" .Values.longline \"d\" \"a\\nb\" \"e\" (dict) \"f\" (list) \"g\" \"1.5\" \"h\" \"y\" \"i\" \"2021-01-01\" \"j\" \"x: y\" \"k\" 1e21 \"l\" .Values.ratio \"m\" .Values.bigger \"n\" .Values.replicas) }}",
    ),
    ("toYamlPretty nested", "{{ toYamlPretty .Values.nested }}"),
    (
        "derivePassword",
        "{{ derivePassword 1 \"long\" \"password\" \"user\" \"example.com\" }} {{ derivePassword 3 \"maximum\" \"pw\" \"u\" \"s\" }} {{ derivePassword 7 \"pin\" \"pw\" \"\" \"\" }} {{ derivePassword 1 \"nope\" \"a\" \"b\" \"c\" }}",
    ),
    (
        // A ciphertext made by helm's encryptAES; encryptAES itself is random (its IV).
        "decryptAES",
        "{{ decryptAES \"secretkey\" \"/7Kxuv0/gWVgg1BX0x4Pb2FqCklFjcN1+0OpWjoCPfH7LrM/CxaD4TLfhZC5e3De5oxUGsjfH1t0LhjZcX169Q==\" }} [{{ decryptAES \"k\" \"\" }}] [{{ encryptAES \"k\" \"\" }}]",
    ),
    (
        "encryptAES round trip",
        "{{ encryptAES \"k\" \"hello world\" | decryptAES \"k\" }} {{ encryptAES \"a key longer than thirty-two bytes!!\" \"0123456789abcdef\" | decryptAES \"a key longer than thirty-two bytes!!\" }} {{ encryptAES \"k\" \"x\" | len }}",
    ),
    (
        // Salted: the shape is compared here; tests in the crate verify the hashes.
        "bcrypt and htpasswd shape",
        "{{ bcrypt \"pw\" | hasPrefix \"$2a$10$\" }} {{ bcrypt \"pw\" | len }} {{ htpasswd \"user\" \"pw\" | hasPrefix \"user:$2a$10$\" }} {{ htpasswd \"a:b\" \"pw\" }} {{ bcrypt (repeat 73 \"x\") }}",
    ),
    (
        "urlParse",
        "{{ urlParse \"https://u:p@host.example:8443/a%20b/c?x=1&y=%20#frag%21\" | toJson }} {{ urlParse \"mailto:someone@example.com\" | toJson }} {{ urlParse \"//cdn.example/x\" | toJson }} {{ urlParse \"/just/a/path?q\" | toJson }} {{ urlParse \"http://[fe80::1%25en0]:80/\" | toJson }} {{ urlParse \"HTTP://%7Euser@h/%7e?\" | toJson }}",
    ),
    (
        "urlJoin",
        "{{ urlJoin (dict \"scheme\" \"https\" \"host\" \"h:1\" \"path\" \"/a b\" \"query\" \"q=1\" \"fragment\" \"f g!\" \"userinfo\" \"u:p\") }} {{ urlJoin (dict \"path\" \"a:b/c\") }} {{ urlJoin (dict \"scheme\" \"mailto\" \"opaque\" \"x@y\") }} {{ urlJoin (dict \"host\" \"h\" \"path\" \"rel\") }} {{ urlJoin (dict) }}|",
    ),
    (
        "urlParse then urlJoin",
        "{{ range list \"https://u%40x:p%3Aw@Example.com:8443/a%20b/c?q=1#frag%21\" \"http://h/%2F%2f?x#a%2Fb\" \"file:///etc/hosts\" \"ftp://h\" \"s3:bucket/key\" \"?only=query\" }}{{ urlParse . | urlJoin }} {{ end }}",
    ),
];

/// Templates that must fail in helm and here; `true`: the messages must match as well.
pub const FAIL: &[(&str, &str, bool)] = &[
    ("method without its argument", "{{ .Files.Get }}", true),
    (
        "method with a wrong argument type",
        "{{ .Capabilities.APIVersions.Has 1 }}",
        false,
    ),
    (
        "hasKey of a missing field",
        "{{ hasKey .Values.missing \"a\" }}",
        true,
    ),
    (
        "upper of a missing field",
        "{{ upper .Values.missing }}",
        true,
    ),
    (
        "define twice in one file",
        "{{ define \"b2\" }}override{{ end }}{{ block \"b2\" . }}default{{ end }}",
        false,
    ),
    ("undefined function", "{{ nope 1 }}", true),
    ("undefined variable", "{{ $nope }}", true),
    ("unclosed action", "{{ .Values.name ", false),
    ("unexpected end", "{{ end }}", true),
    ("missing end", "{{ if true }}x", true),
    ("break outside range", "{{ break }}", true),
    ("bad number", "{{ 3x }}", false),
    ("nil pointer", "{{ .Values.missing.field }}", true),
    ("nil pointer deep", "{{ .Values.nothing.a.b }}", true),
    ("field on string", "{{ .Values.name.field }}", true),
    ("wrong arg count", "{{ upper \"a\" \"b\" }}", true),
    ("wrong arg type", "{{ upper .Values.replicas }}", true),
    (
        "int param float",
        "{{ repeat .Values.replicas \"x\" }}",
        true,
    ),
    ("string param nil", "{{ .Values.missing | upper }}", false),
    ("index out of range", "{{ index .Values.list 5 }}", true),
    (
        "index with float",
        "{{ index .Values.list .Values.replicas }}",
        true,
    ),
    ("index nil", "{{ index .Values.missing 1 }}", true),
    (
        "range over number",
        "{{ range .Values.replicas }}{{ end }}",
        true,
    ),
    (
        "range over string",
        "{{ range .Values.name }}{{ end }}",
        true,
    ),
    ("missing template", "{{ template \"nope\" }}", true),
    ("include missing", "{{ include \"nope\" . }}", true),
    ("fail", "{{ fail \"boom\" }}", true),
    (
        "fail in include",
        "{{ define \"f\" }}{{ fail \"inner\" }}{{ end }}x: {{ include \"f\" . }}",
        true,
    ),
    (
        "required missing",
        "{{ required \"need .Values.missing\" .Values.missing }}",
        true,
    ),
    (
        "required empty",
        "{{ .Values.empty | required \"empty!\" }}",
        true,
    ),
    ("eq incompatible", "{{ eq .Values.replicas 3 }}", true),
    ("lt incompatible", "{{ lt .Values.replicas 5 }}", true),
    ("eq list", "{{ eq .Values.list .Values.list }}", true),
    ("lt nil", "{{ lt .Values.missing 1 }}", true),
    ("len of number", "{{ len .Values.replicas }}", true),
    ("not a function", "{{ .Values.name 1 }}", true),
    ("nil command", "{{ nil }}", true),
    ("div by zero", "{{ div 1 0 }}", false),
    ("tpl parse error", "{{ tpl \"{{ nope }}\" . }}", false),
    (
        "tpl exec error",
        "{{ tpl \"{{ .Values.missing.x }}\" . }}",
        true,
    ),
    (
        "include recursion unbounded",
        "{{ define \"loop\" }}{{ include \"loop\" . }}{{ end }}{{ include \"loop\" . }}",
        false,
    ),
    ("first of string", "{{ first .Values.name }}", false),
    (
        "semverCompare bad constraint",
        "{{ semverCompare \"!!\" \"1.0.0\" }}",
        false,
    ),
    (
        "semverCompare bad version",
        "{{ semverCompare \">1\" \"abc\" }}",
        true,
    ),
    ("set on string", "{{ set .Values.name \"a\" 1 }}", true),
    ("unterminated string", "{{ \"abc }}", false),
    ("unexpected paren", "{{ ) }}", false),
    ("else without if", "{{ else }}", true),
    ("two decls in if", "{{ if $a, $b := 1 }}{{ end }}", false),
    ("urlParse bad", "{{ urlParse \"http://h:port/\" }}", false),
    (
        "urlJoin non-string",
        "{{ urlJoin (dict \"host\" 1) }}",
        false,
    ),
    (
        "decryptAES not base64",
        "{{ decryptAES \"k\" \"!!\" }}",
        false,
    ),
    ("decryptAES short", "{{ decryptAES \"k\" \"YWJj\" }}", false),
];
