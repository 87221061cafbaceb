//! tests/qemu/boot.py, the QEMU runner of every guest scenario and
//! benchmark, driven with a stand-in for QEMU (a shell script that prints
//! what a guest's console would): when it restarts a guest and when it must
//! not, since a wrong restart would hide a failing scenario.

use std::path::Path;
use std::process::Command;

/// Runs boot.py with `console` (a shell script body) as "QEMU"; returns
/// its stdout line and the restart notes.
fn run(dir: &Path, console: &str) -> (String, String) {
    let fake = dir.join("qemu");
    std::fs::write(&fake, format!("#!/bin/sh\nstate={}/runs\n{console}\n", dir.display())).unwrap();
    let st = Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    assert!(st.success());
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qemu/boot.py"))
        .args(["--log", &dir.join("guest.log").display().to_string()])
        .args(["--until", "TEST: (DONE|FAIL)", "--timeout", "30"])
        .args(["--restarts", &dir.join("restarts.txt").display().to_string()])
        .arg("--")
        .arg(&fake)
        .output()
        .expect("python3 (scripts/apt-packages.txt)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restarts = std::fs::read_to_string(dir.join("restarts.txt")).unwrap_or_default();
    (String::from_utf8(out.stdout).unwrap(), restarts)
}

#[test]
fn a_kernel_int3_oops_is_restarted_once_and_noted_with_the_first_log_kept() {
    let tmp = tempfile::tempdir().unwrap();
    // First run: Debian 13's oops, then a hang; second: a good boot.
    let console = r#"echo x >> "$state"
if [ "$(wc -l < "$state")" = 1 ]; then
    echo "[    1.254000] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"; exec sleep 60
fi
echo "ROOT-UP"; echo "TEST: DONE"; exec sleep 60"#;
    let (line, restarts) = run(tmp.path(), console);
    assert!(line.ends_with(" until\n"), "{line}");
    assert!(restarts.contains("guest.log: restarted after the kernel's TCG int3 oops"), "{restarts}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("runs")).unwrap().lines().count(), 2);
    let first = std::fs::read_to_string(tmp.path().join("guest.log.first")).unwrap();
    assert!(first.contains("Oops: int3"), "{first}");
    let second = std::fs::read_to_string(tmp.path().join("guest.log")).unwrap();
    assert!(second.contains("TEST: DONE") && !second.contains("int3"), "{second}");
}

#[test]
fn a_second_int3_oops_and_any_other_panic_are_not_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    // Debian 12's wording, every time: one restart, then the failure stands.
    let console = r#"echo x >> "$state"
echo "[    1.3] int3: 0000 [#1] PREEMPT SMP NOPTI"
echo "Kernel panic - not syncing: Fatal exception in interrupt""#;
    let (line, restarts) = run(tmp.path(), console);
    assert!(line.ends_with(" exit\n"), "{line}");
    assert_eq!(restarts.lines().count(), 1, "{restarts}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("runs")).unwrap().lines().count(), 2);

    // A panic of our own making (init died) is the scenario's failure.
    let tmp = tempfile::tempdir().unwrap();
    let console = r#"echo x >> "$state"
echo "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100""#;
    let (line, restarts) = run(tmp.path(), console);
    assert!(line.ends_with(" exit\n"), "{line}");
    assert!(restarts.is_empty(), "{restarts}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("runs")).unwrap().lines().count(), 1);
    assert!(!tmp.path().join("guest.log.first").exists());
}
