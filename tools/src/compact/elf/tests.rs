//! Tests of the exec closure: synthetic ELF objects for each loader rule
//! (the host's own binaries are checked against `ldd` in the tests crate,
//! `tests/tests/host_elf_closure.rs`).

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use pare_fs::layers::LayerStack;

use goblin::elf::header::EM_X86_64;

use super::ldso_conf::{conf_dirs, matcher};
use super::object::Abi;
use super::search::expand;
use super::*;

fn p(s: &str) -> ImagePath {
    ImagePath::new(s.as_bytes().to_vec()).unwrap()
}

fn ps(list: &[&str]) -> Vec<ImagePath> {
    list.iter().map(|s| p(s)).collect()
}

/// A one-layer image being built in a temporary directory.
struct Image {
    _dir: tempfile::TempDir,
    layer: PathBuf,
}

impl Image {
    fn new() -> Image {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        Image { _dir: dir, layer }
    }

    fn host(&self, path: &str) -> PathBuf {
        self.layer.join(path.trim_start_matches('/'))
    }

    fn file(&self, path: &str, content: impl AsRef<[u8]>) -> &Image {
        let at = self.host(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, content).unwrap();
        self
    }

    fn link(&self, path: &str, target: &str) -> &Image {
        let at = self.host(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(target, at).unwrap();
        self
    }

    fn tree(&self) -> ImageTree {
        ImageTree::new(LayerStack::open(vec![self.layer.clone()]).unwrap())
    }
}

/// What a synthetic ELF object declares.
#[derive(Default)]
struct Spec<'a> {
    interp: Option<&'a str>,
    needed: &'a [&'a str],
    soname: Option<&'a str>,
    rpath: Option<&'a str>,
    runpath: Option<&'a str>,
}

/// A minimal x86-64 ELF shared object: one PT_LOAD mapping the whole file at
/// address 0, PT_DYNAMIC, and PT_INTERP when asked.
fn elf(spec: Spec) -> Vec<u8> {
    let mut strtab = vec![0u8];
    let mut dyns: Vec<(u64, u64)> = Vec::new();
    let mut string = |tag: u64, s: &str| {
        dyns.push((tag, strtab.len() as u64));
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
    };
    spec.needed.iter().for_each(|n| string(1, n)); // DT_NEEDED
    spec.soname.inspect(|s| string(14, s));
    spec.rpath.inspect(|s| string(15, s));
    spec.runpath.inspect(|s| string(29, s));
    let phnum = if spec.interp.is_some() { 3 } else { 2 };
    let str_at = 64 + 56 * phnum;
    let interp_at = str_at + strtab.len();
    let interp: Vec<u8> = spec
        .interp
        .map(|i| [i.as_bytes(), b"\0"].concat())
        .unwrap_or_default();
    let dyn_at = (interp_at + interp.len()).div_ceil(8) * 8;
    dyns.extend([(5, str_at as u64), (10, strtab.len() as u64), (0, 0)]);
    let total = dyn_at + dyns.len() * 16;

    let mut out = b"\x7fELF\x02\x01\x01".to_vec();
    out.resize(16, 0);
    out.extend(3u16.to_le_bytes()); // ET_DYN
    out.extend(62u16.to_le_bytes()); // EM_X86_64
    out.extend(1u32.to_le_bytes());
    out.extend(0u64.to_le_bytes()); // entry
    out.extend(64u64.to_le_bytes()); // phoff
    out.extend(0u64.to_le_bytes()); // shoff
    out.extend(0u32.to_le_bytes()); // flags
    for v in [64u16, 56, phnum as u16, 64, 0, 0] {
        out.extend(v.to_le_bytes());
    }
    let mut phdr = |kind: u32, off: usize, size: usize| {
        out.extend(kind.to_le_bytes());
        out.extend(4u32.to_le_bytes()); // PF_R
        for v in [off, off, off, size, size, 8] {
            out.extend((v as u64).to_le_bytes());
        }
    };
    phdr(1, 0, total); // PT_LOAD
    phdr(2, dyn_at, dyns.len() * 16); // PT_DYNAMIC
    if spec.interp.is_some() {
        phdr(3, interp_at, interp.len()); // PT_INTERP
    }
    out.extend(strtab);
    out.extend(interp);
    out.resize(dyn_at, 0);
    for (tag, val) in dyns {
        out.extend(tag.to_le_bytes());
        out.extend(val.to_le_bytes());
    }
    out
}

fn lib(needed: &[&str]) -> Vec<u8> {
    elf(Spec {
        needed,
        ..Spec::default()
    })
}

/// An ELF header of a 32-bit i386 object (another ABI: never loaded by x86-64).
fn elf32_header() -> Vec<u8> {
    let mut out = b"\x7fELF\x01\x01\x01".to_vec();
    out.resize(16, 0);
    out.extend(3u16.to_le_bytes());
    out.extend(3u16.to_le_bytes()); // EM_386
    out.resize(52, 0);
    out
}

fn unresolved(name: &str, needed_by: &str) -> Unresolved {
    Unresolved {
        name: name.into(),
        needed_by: p(needed_by),
    }
}

#[test]
fn runpath_origin_resolves_beside_the_object_and_interpreter_is_matched_by_soname() {
    let img = Image::new();
    img.file(
        "/opt/app/bin/app",
        elf(Spec {
            interp: Some("/lib/ld.so"),
            needed: &["libfoo.so.1"],
            runpath: Some("$ORIGIN/../lib"),
            ..Spec::default()
        }),
    )
    .link("/opt/app/current", "bin")
    .file(
        "/opt/app/lib/libfoo.so.1",
        elf(Spec {
            needed: &["libbar.so.2", "ld.so"],
            runpath: Some("/nowhere:${ORIGIN}"),
            ..Spec::default()
        }),
    )
    .file("/opt/app/lib/libbar.so.2", lib(&["libfoo.so.1"]))
    .file(
        "/lib/ld.so",
        elf(Spec {
            soname: Some("ld.so"),
            ..Spec::default()
        }),
    )
    .file("/etc/ld.so.cache", "cache");
    let got = exec_closure(&img.tree(), &p("/opt/app/current/app")).unwrap();
    assert_eq!(
        got,
        ps(&[
            "/opt/app/current",
            "/opt/app/bin/app",
            "/lib/ld.so",
            "/opt/app/lib/libfoo.so.1",
            "/opt/app/lib/libbar.so.2",
        ]),
        "no search reached ld.so.cache, so it is not needed"
    );
}

#[test]
fn rpath_is_inherited_from_loaders_but_not_by_an_object_with_runpath() {
    let img = Image::new();
    img.file(
        "/bin/app",
        elf(Spec {
            needed: &["libA.so"],
            rpath: Some("/r1"),
            ..Spec::default()
        }),
    )
    .file("/r1/libA.so", lib(&["libB.so"]))
    .file(
        "/r1/libB.so",
        elf(Spec {
            needed: &["libC.so"],
            runpath: Some("/r2"),
            ..Spec::default()
        }),
    )
    .file("/r1/libC.so", lib(&[]));
    let tree = img.tree();
    let err = exec_closure(&tree, &p("/bin/app")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot find libC.so (needed by /r1/libB.so)"
    );
    let ElfError::Unresolved(partial) = err else {
        panic!("not an unresolved error")
    };
    assert_eq!(
        *partial,
        ExecClosure {
            paths: ps(&["/bin/app", "/r1/libA.so", "/r1/libB.so"]),
            unresolved: vec![unresolved("libC.so", "/r1/libB.so")],
        }
    );
    assert_eq!(
        exec_closure_lenient(&tree, &p("/bin/app")).unwrap(),
        *partial
    );
}

#[test]
fn ld_so_conf_then_default_dirs_skipping_other_abis() {
    let img = Image::new();
    img.file(
        "/etc/ld.so.conf",
        "# comment\ninclude conf.d/*.conf /etc/none/*.conf\n  /opt/first/  # trailing\nhwcap 0 nosegneg\n",
    )
    .file("/etc/conf.d/b.conf", "/opt/b\ninclude /etc/ld.so.conf\n")
    .file("/etc/conf.d/a.conf", "/opt/a\n")
    .file("/etc/conf.d/.hidden.conf", "/opt/hidden\n")
    .file("/etc/conf.d/a.conf.bak", "/opt/bak\n")
    .file("/etc/ld.so.conf.d/x.conf", "/opt/x\n/opt/a\n")
    .file("/usr/bin/app", lib(&["libz.so", "libd.so"]))
    .file("/opt/a/libz.so", elf32_header())
    .file("/opt/b/libz.so", "INPUT(-lz) /* a linker script */")
    .file("/opt/first/libz.so", lib(&[]))
    .file("/opt/x/libz.so", lib(&[]))
    .file("/usr/lib/libd.so", elf32_header())
    .file("/usr/lib64/libd.so", lib(&[]))
    .link("/etc/ld.so.cache", "ld.so.cache~")
    .file("/etc/ld.so.cache~", "cache");
    let tree = img.tree();
    let dirs: Vec<String> = conf_dirs(&tree)
        .unwrap()
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert_eq!(dirs, ["/opt/a", "/opt/b", "/opt/first/", "/opt/x"]);
    assert_eq!(
        exec_closure(&tree, &p("/usr/bin/app")).unwrap(),
        ps(&[
            "/usr/bin/app",
            "/opt/first/libz.so",
            "/usr/lib64/libd.so",
            "/etc/ld.so.cache",
            "/etc/ld.so.cache~",
        ])
    );
}

#[test]
fn cycles_and_shared_dependencies_are_visited_once() {
    let img = Image::new();
    img.file("/usr/bin/app", lib(&["liba.so", "libb.so", "liba.so"]))
        .file("/usr/lib/liba.so", lib(&["libb.so"]))
        .file("/usr/lib/libb.so", lib(&["liba.so"]))
        .link("/usr/lib/libalias.so", "liba.so")
        .file("/usr/bin/other", lib(&["libalias.so", "liba.so"]));
    let tree = img.tree();
    assert_eq!(
        exec_closure(&tree, &p("/usr/bin/app")).unwrap(),
        ps(&["/usr/bin/app", "/usr/lib/liba.so", "/usr/lib/libb.so"])
    );
    assert_eq!(
        exec_closure(&tree, &p("/usr/bin/other")).unwrap(),
        ps(&[
            "/usr/bin/other",
            "/usr/lib/libalias.so",
            "/usr/lib/liba.so",
            "/usr/lib/libb.so"
        ]),
        "a second name for a loaded file adds its symlink, not a second object"
    );
}

#[test]
fn scripts_take_their_interpreters_closure() {
    let img = Image::new();
    img.link("/bin", "usr/bin")
        .link("/usr/bin/sh", "dash")
        .file("/usr/bin/dash", lib(&["libc.so.6"]))
        .file("/usr/lib/x86_64-linux-gnu/libc.so.6", lib(&[]))
        .file("/app/run.sh", "#! /bin/sh -e\necho hi\n")
        .file("/usr/bin/env", lib(&["libc.so.6"]))
        .file("/usr/local/bin/python3", lib(&[]))
        .file("/app/tool.py", "#!/usr/bin/env python3\n")
        .file("/app/lost.py", "#!/usr/bin/env python9\n")
        .file("/app/crlf.sh", "#!/bin/sh\r\n")
        .file("/app/a.sh", "#!/app/b.sh\n")
        .file("/app/b.sh", "#!/app/a.sh\n")
        .file("/app/data.txt", "plain text");
    let tree = img.tree();
    let closure = |s: &str| exec_closure_lenient(&tree, &p(s)).unwrap();
    let sh = ["/bin", "/usr/bin/sh", "/usr/bin/dash"];
    let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    assert_eq!(
        closure("/app/run.sh").paths,
        ps(&["/app/run.sh", sh[0], sh[1], sh[2], libc])
    );
    assert_eq!(
        closure("/app/tool.py").paths,
        ps(&[
            "/app/tool.py",
            "/usr/bin/env",
            libc,
            "/usr/local/bin/python3"
        ])
    );
    assert_eq!(
        closure("/app/lost.py").unresolved,
        [unresolved("python9", "/app/lost.py")]
    );
    assert_eq!(
        closure("/app/crlf.sh").unresolved,
        [unresolved("/bin/sh\r", "/app/crlf.sh")],
        "the kernel keeps a carriage return in the interpreter's name"
    );
    assert_eq!(closure("/app/a.sh").paths, ps(&["/app/a.sh", "/app/b.sh"]));
    assert_eq!(closure("/app/data.txt").paths, ps(&["/app/data.txt"]));
}

#[test]
fn bad_inputs_give_clear_errors_never_panics() {
    let mut truncated = lib(&["libc.so.6"]);
    truncated.truncate(100);
    let img = Image::new();
    img.file(
        "/bin/garbage",
        b"\x7fELF\x02\x01\x01 this is not an ELF object",
    )
    .file("/bin/truncated", truncated)
    .file("/bin/short", b"\x7fELF")
    .file("/bin/needs-bad", lib(&["libbad.so"]))
    .file(
        "/usr/lib/libbad.so",
        b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0garbage",
    )
    .file(
        "/bin/no-interp",
        elf(Spec {
            interp: Some("/lib64/ld-linux-x86-64.so.2"),
            ..Spec::default()
        }),
    )
    .link("/bin/dangling", "/nowhere")
    .link("/bin/loop", "loop");
    std::fs::create_dir_all(img.host("/bin/dir")).unwrap();
    let tree = img.tree();
    let err = |s: &str| exec_closure(&tree, &p(s)).unwrap_err().to_string();
    for (path, want) in [
        ("/bin/garbage", "/bin/garbage: malformed ELF: "),
        ("/bin/truncated", "/bin/truncated: malformed ELF: "),
        (
            "/bin/short",
            "/bin/short: malformed ELF: truncated ELF header",
        ),
        ("/bin/needs-bad", "/usr/lib/libbad.so: malformed ELF: "),
        (
            "/bin/no-interp",
            "cannot find /lib64/ld-linux-x86-64.so.2 (needed by /bin/no-interp)",
        ),
        ("/bin/missing", "/bin/missing is not in the image"),
        ("/bin/dangling", "/bin/dangling is not in the image"),
        ("/bin/loop", "/bin/loop is not in the image"),
        ("/bin/dir", "/bin/dir is not a regular file"),
    ] {
        let got = err(path);
        assert!(got.starts_with(want), "{path}: {got}");
    }
}

#[test]
fn expand_substitutes_dynamic_string_tokens() {
    let x86_64 = Abi {
        class: 2,
        data: 1,
        machine: EM_X86_64,
    };
    let cases: [(&str, &[&str]); 6] = [
        ("$ORIGIN/../lib", &["/o/bin/../lib"]),
        ("${ORIGIN}:x", &["/o/bin:x"]),
        ("$ORIGINAL/x", &["$ORIGINAL/x"]),
        ("/p/$PLATFORM", &["/p/x86_64"]),
        (
            "/usr/$LIB/x",
            &["/usr/lib/x86_64-linux-gnu/x", "/usr/lib64/x", "/usr/lib/x"],
        ),
        ("$FOO/${BAR", &["$FOO/${BAR"]),
    ];
    for (dir, want) in cases {
        let got: Vec<String> = expand(dir.as_bytes(), b"/o/bin", x86_64)
            .into_iter()
            .map(|d| String::from_utf8(d).unwrap())
            .collect();
        assert_eq!(got, want, "{dir}");
    }
}

#[test]
fn include_globs_follow_glob_rules() {
    for (pattern, name, want) in [
        ("*.conf", "libc.conf", true),
        ("*.conf", "libc.conf.bak", false),
        ("*", "", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("?.so", "a.so", true),
        ("?.so", "ab.so", false),
        ("[a-c]x", "bx", true),
        ("[!a-c]x", "bx", false),
        ("[^a-c]x", "dx", true),
        ("[]]x", "]x", true),
        ("[x", "[x", true),
        ("\\*", "*", true),
        ("\\*", "a", false),
        ("{a,b}.conf", "a.conf", false),
        ("{a,b}.conf", "{a,b}.conf", true),
        ("[{]*}", "{x}", true),
        ("a**", "abc", true),
    ] {
        let got = matcher(pattern.as_bytes()).is_some_and(|m| m.is_match(name));
        assert_eq!(got, want, "{pattern} {name}");
    }
    assert!(
        matcher(b"[z-a]").is_none(),
        "an invalid glob matches nothing"
    );
}
