"""What the reports of the systemd boot benchmarks (bench/boot-systemd.sh,
bench/netboot.sh) share: the console's markers and the table cells.

Import it with bench/ on PYTHONPATH."""
import re
import statistics


def console(path):
    """The guest's console with host times (tests/qemu/boot.py's LOG.times):
    a list of (seconds since QEMU started, line)."""
    lines = []
    for raw in open(path, errors="replace", newline="\n"):
        t, _, text = raw.rstrip("\n").partition(" ")
        lines.append((float(t), text.rstrip("\r")))
    return lines


def multiuser_marks(res, t, text):
    """What tests/qemu/guest/debian-check.sh prints with cloopbox.test=boot:
    ROOT-UP (multi-user: host and guest time) and BOOT-DONE (the state)."""
    m = re.match(r"ROOT-UP multi-user uptime=([\d.]+)", text)
    if m:
        res["multiuser_host_s"] = round(t, 3)
        res["multiuser_guest_s"] = float(m.group(1))
    m = re.match(r"BOOT-DONE uptime=[\d.]+ state=(\S+)", text)
    if m:
        res["state"] = m.group(1)


class Stats:
    """Medians of the boots that did not fail, per contender name."""

    def __init__(self, runs):
        self.ok = [r for r in runs if not r["error"]]

    def vals(self, n, key):
        return [r[key] for r in self.ok if r["name"] == n and r.get(key) is not None]

    def med(self, n, key):
        v = self.vals(n, key)
        return statistics.median(v) if v else None

    def cell(self, n, key, fmt="{:.1f}"):
        """median (min–max), or the one value, or — without any."""
        v = self.vals(n, key)
        if not v:
            return "—"
        m = fmt.format(statistics.median(v))
        return f"{m} ({fmt.format(min(v))}–{fmt.format(max(v))})" if len(v) > 1 else m
