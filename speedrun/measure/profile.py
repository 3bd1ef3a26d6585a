"""Where the device time of a training step goes: read a ``jax.profiler`` trace back and sum its
op (CPU) or kernel (GPU) times by category (``./run.sh profile``, :mod:`speedrun.measure.profile_command`).

- :func:`read_trace`: the op events of a trace folder, from the XSpace protobuf
  (``plugins/profile/*/*.xplane.pb``) through ``jax.profiler.ProfileData``, or from the Chrome
  trace (``*.trace.json.gz``) when this JAX has no ``ProfileData``. On a GPU the events are the
  kernels and memory copies of the device planes' ``Stream`` lines (CUPTI); on the CPU backend they
  are XLA:CPU's thunks — one event per HLO instruction (``convolution.3``, ``ynn_fusion.12``,
  ``select_reduce_fusion``), on whichever thread ran it, tagged ``hlo_op`` and ``hlo_module``.
- :func:`hlo_ops`: which HLO opcodes each instruction of a compiled module's text runs (a fusion's
  called computations included), so that an opaque name (XLA:CPU's ``ynn_fusion``, a GPU
  ``custom-call``) is categorised by what it computes.
- :func:`categorize`: the category of one kernel or op name (pure; the rules are in its docstring).
- :func:`summarize` and :func:`format_table`: per-category time and share, host gaps, the top kernels.

Times are self times: an event's duration less that of the events nested inside it on the same
line (an XLA:CPU ``while`` thunk and its body). The device time is the sum over every counted event
of every device (ops that run at once on different threads or streams each count), so it may exceed
the traced wall time; host gaps are the wall time during which no event ran at all.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path
from typing import Any, Iterable, NamedTuple

CATEGORIES = ("convolution", "matmul", "reduction", "scatter/gather", "elementwise", "copies/transposes", "other")

# Evidence, strongest first: a name or opcode matching an earlier rule decides the category.
_RULES = [
    ("convolution", re.compile(r"conv(?!ert)|cudnn|fprop|dgrad|wgrad|winograd")),
    ("matmul", re.compile(r"gemm|matmul|cublas|cutlass|xmma|(^|[^a-z])dot([^a-z]|$)")),
    ("scatter/gather", re.compile(r"scatter|gather")),
    ("reduction", re.compile(r"reduc|argmax|argmin")),
    ("elementwise", re.compile(
        r"(^|[^a-z])(add|subtract|multiply|divide|select|compare|exponential|exp|log|rsqrt|sqrt|tanh|maximum|"
        r"minimum|max|min|negate|convert|power|and|or|xor|not|abs|clamp|iota|logistic|erf|floor|ceil|round|"
        r"sign|rng|threefry|cosine|sine|atan2|remainder|shift|elementwise|popcnt|is-finite)([^a-z]|$)")),
    ("copies/transposes", re.compile(r"copy|transpose|concatenate|slice|(^|[^a-z])pad([^a-z]|$)|reverse|broadcast")),
]
_DEFINITE_COPY = re.compile(r"memcpy|memset|converttensor|nchw_?to_?nhwc|nhwc_?to_?nchw")
_COLLECTIVE = re.compile(r"all-reduce|all_reduce|allreduce|all-gather|all_gather|reduce-scatter|reduce_scatter|"
                         r"all-to-all|collective|nccl|psum")
_WEAK_ELEMENTWISE = re.compile(r"fusion|^loop_|^wrapped_")  # a fusion of unknown content
_NO_EVIDENCE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "fusion", "call"}


def categorize(name: str, ops: Iterable[str] = ()) -> str:
    """The category (one of :data:`CATEGORIES`) of a GPU kernel or an XLA op, from its name and, when
    known, the HLO opcodes it runs (``ops``, from :func:`hlo_ops`; custom calls as
    ``"custom-call:<target>"``).

    Rules, on the lower-cased name: memory copies and cuDNN layout kernels (``memcpy``, ``memset``,
    ``convertTensor``, ``nchwToNhwc``) are copies/transposes and collectives (``all-reduce``,
    ``nccl``, ``psum``) are other, whatever else they contain; otherwise the strongest evidence of
    the name and of every opcode decides, in this order: convolution (``conv`` but not ``convert``,
    ``cudnn``, ``fprop``/``dgrad``/``wgrad``), matmul (``gemm``, ``cublas``, ``cutlass``, ``xmma``,
    ``dot``), scatter/gather, reduction (``reduce``, ``reduce-window``, ``reduction``), elementwise
    (arithmetic and logic opcodes), copies/transposes (``copy``, ``transpose``, ``slice``,
    ``concatenate``, ``pad``, ``reverse``, ``broadcast``: only when nothing computes), then a fusion
    of unknown content (``*fusion*``, ``loop_*``, ``wrapped_*``) is elementwise; anything else
    (``while``, ``sort``, an unknown custom call) is other. XLA names a fusion after the opcodes it
    fuses (``select_reduce_fusion``), and GPU libraries name kernels after what they do
    (``sm90_xmma_fprop_implicit_gemm_*`` is a convolution, ``ampere_sgemm_*`` a matmul).
    """
    lowered = name.lower()
    if _DEFINITE_COPY.search(lowered):
        return "copies/transposes"
    if _COLLECTIVE.search(lowered):
        return "other"
    evidence = [lowered] + [op.lower() for op in ops if op.lower() not in _NO_EVIDENCE]
    for category, rule in _RULES:
        if any(rule.search(text) for text in evidence if not _COLLECTIVE.search(text)):
            return category
    return "elementwise" if _WEAK_ELEMENTWISE.search(lowered) else "other"


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.+?\s([a-z][\w\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=\{?%?([\w.\-]+)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def hlo_ops(hlo_text: str) -> dict[str, frozenset[str]]:
    """``{instruction name: opcodes it runs}`` for every instruction of an HLO module's text
    (``jax.stages.Compiled.as_text()``): its own opcode, plus, recursively, those of the
    computations it calls (``calls=``, ``to_apply=``, ``body=``, ``condition=``); a custom call's
    opcode is ``"custom-call:<custom_call_target>"``."""
    own: dict[str, tuple[str, list[str]]] = {}
    bodies: dict[str, list[str]] = collections.defaultdict(list)
    computation = None
    for line in hlo_text.splitlines():
        if (m := _INSTRUCTION.match(line)) and computation is not None:
            name, opcode = m.groups()
            if opcode == "custom-call" and (t := _TARGET.search(line)):
                opcode = f"custom-call:{t.group(1)}"
            own[name] = (opcode, _CALLS.findall(line))
            bodies[computation].append(name)
        elif (c := _COMPUTATION.match(line)) and not line.startswith(" "):
            computation = c.group(1)

    def ops_of_computation(comp: str, seen: set[str]) -> set[str]:
        if comp in seen:
            return set()
        seen.add(comp)
        return set().union(*(ops_of(i, seen) for i in bodies.get(comp, ())))

    def ops_of(inst: str, seen: set[str]) -> set[str]:
        opcode, called = own[inst]
        return {opcode}.union(*(ops_of_computation(c, seen) for c in called))

    return {name: frozenset(ops_of(name, set())) for name in own}


class Event(NamedTuple):
    """One op or kernel execution: ``line`` (its plane and thread/stream), ``name``, start and
    duration in ns, and its HLO instruction and module (``""`` when the trace has none)."""
    line: str
    name: str
    start_ns: float
    duration_ns: float
    hlo_op: str
    hlo_module: str


def _keep_lines(lines: list[str]) -> set[str]:
    """The lines of a device plane that hold its kernels: CUPTI's ``Stream`` lines, else (TPU)
    ``XLA Ops``, else every line."""
    for pick in (lambda n: n.startswith("Stream"), lambda n: n == "XLA Ops"):
        chosen = {n for n in lines if pick(n)}
        if chosen:
            return chosen
    return set(lines)


def _events_from_planes(planes: list[tuple[str, str, list[tuple[str, float, float, dict]]]]) -> list[Event]:
    """``planes``: ``(plane name, line name, [(event name, start ns, duration ns, stats)])``."""
    device = [p for p in planes if p[0].startswith("/device:")]
    events = set()
    if device:
        keep = _keep_lines([line for _, line, _ in device])
        for plane, line, evs in device:
            if line in keep:
                events |= {Event(f"{plane}/{line}", n, s, d, str(st.get("hlo_op", "")), str(st.get("hlo_module", "")))
                           for n, s, d, st in evs}
    else:  # the CPU backend: XLA's thunks carry hlo_op, on the host plane's threads
        for plane, line, evs in planes:
            events |= {Event(f"{plane}/{line}", n, s, d, str(st["hlo_op"]), str(st.get("hlo_module", "")))
                       for n, s, d, st in evs if "hlo_op" in st}
    return sorted(events, key=lambda e: (e.line, e.start_ns, -e.duration_ns))


def read_trace(folder: str | Path, use_xspace: bool = True) -> tuple[list[Event], Path]:
    """The op events of the latest trace under ``folder`` (a ``jax.profiler.trace`` log dir) and the
    file read. ``use_xspace=False`` reads the Chrome trace even where ``ProfileData`` exists.

    Raises:
      FileNotFoundError: no ``plugins/profile/*/*.xplane.pb`` (or ``*.trace.json.gz``) under ``folder``.
    """
    runs = sorted(Path(folder).glob("plugins/profile/*/"), key=lambda p: p.stat().st_mtime)
    try:
        from jax.profiler import ProfileData  # noqa: PLC0415
    except ImportError:
        ProfileData = None  # noqa: N806
    pattern = "*.xplane.pb" if use_xspace and ProfileData is not None else "*.trace.json.gz"
    files = sorted(runs[-1].glob(pattern)) if runs else []
    if not files:
        raise FileNotFoundError(f"no {pattern} trace under {folder}/plugins/profile/")
    path = files[-1]
    planes = []
    if path.suffix == ".pb":
        for plane in ProfileData.from_file(str(path)).planes:
            for line in plane.lines:
                planes.append((plane.name, line.name, [(e.name, e.start_ns, e.duration_ns, dict(e.stats))
                                                       for e in line.events]))
    else:  # Chrome trace format: microseconds; process and thread names from the metadata events
        trace = json.loads(gzip.open(path).read())["traceEvents"]
        pnames = {e["pid"]: e["args"]["name"] for e in trace if e.get("ph") == "M" and e["name"] == "process_name"}
        tnames = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace
                  if e.get("ph") == "M" and e["name"] == "thread_name"}
        by_line = collections.defaultdict(list)
        for e in trace:
            if e.get("ph") == "X":
                key = (pnames.get(e["pid"], str(e["pid"])), tnames.get((e["pid"], e.get("tid")), str(e.get("tid"))))
                by_line[key].append((e["name"], e["ts"] * 1e3, e.get("dur", 0.0) * 1e3, e.get("args", {})))
        planes = [(p, line, evs) for (p, line), evs in by_line.items()]
    return _events_from_planes(planes), path


def self_times(events: list[Event]) -> list[float]:
    """Each event's duration (ns) less the durations of the events directly nested in it on the same
    line; ``events`` sorted by line, then start, longer first (as :func:`read_trace` returns them)."""
    out = [e.duration_ns for e in events]
    stack: list[int] = []
    for i, e in enumerate(events):
        while stack and (events[stack[-1]].line != e.line or
                         e.start_ns >= events[stack[-1]].start_ns + events[stack[-1]].duration_ns):
            stack.pop()
        if stack:
            out[stack[-1]] -= e.duration_ns
        stack.append(i)
    return [max(t, 0.0) for t in out]


def busy_ns(events: list[Event]) -> float:
    """Length (ns) of the union of the events' intervals: the time at least one of them ran."""
    total, end = 0.0, float("-inf")
    for s, d in sorted((e.start_ns, e.duration_ns) for e in events):
        if s + d > end:
            total += s + d - max(s, end)
            end = s + d
    return total


def summarize(events: list[Event], wall_s: float, ops: dict[str, frozenset[str]] | None = None,
              module: str | None = None, top: int = 15) -> dict[str, Any]:
    """Device time by category of ``events`` (:func:`read_trace`) over a traced window of
    ``wall_s`` seconds (host clock). ``ops``: :func:`hlo_ops` of ``module`` (e.g. ``"jit_epoch"``),
    used for the events of that module.

    Returns ``{"categories": {category: seconds}`` (every one of :data:`CATEGORIES`),
    ``"device_s"`` (their sum), ``"wall_s"``, ``"busy_s"`` (union of the events' intervals),
    ``"host_gaps_s"`` (``max(0, wall_s - busy_s)``), ``"events"`` (count), ``"top"``: the ``top``
    names with the most time, ``[{"name", "category", "count", "seconds", "share"}]`` (share of
    ``device_s``)}``.
    """
    ops = ops or {}
    per_cat = dict.fromkeys(CATEGORIES, 0.0)
    per_name: dict[str, list] = {}
    for e, t in zip(events, self_times(events)):
        if e.name not in per_name:
            inside = ops.get(e.hlo_op, ()) if module is None or e.hlo_module in ("", module) else ()
            per_name[e.name] = [categorize(e.name, inside), 0, 0.0]
        entry = per_name[e.name]
        entry[1] += 1
        entry[2] += t * 1e-9
        per_cat[entry[0]] += t * 1e-9
    device = sum(per_cat.values())
    busy = busy_ns(events) * 1e-9
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][2])[:top]
    return {"categories": per_cat, "device_s": device, "wall_s": wall_s, "busy_s": busy,
            "host_gaps_s": max(0.0, wall_s - busy), "events": len(events),
            "top": [{"name": n, "category": c, "count": k, "seconds": s, "share": s / device if device else 0.0}
                    for n, (c, k, s) in ranked]}


def format_table(s: dict[str, Any]) -> str:
    """The category table (ms and share of the device time; the rows sum to the device time), the
    host gaps against the wall time, and the top kernels, as text."""
    dev, width = s["device_s"], 18
    share = (lambda t: f"{t / dev:7.1%}") if dev else (lambda t: "      -")
    lines = [f"{'category':<{width}} {'ms':>10} {'share':>7}"]
    lines += [f"{c:<{width}} {t * 1e3:10.3f} {share(t)}" for c, t in s["categories"].items()]
    lines.append(f"{'device time':<{width}} {dev * 1e3:10.3f} {share(dev)}  ({s['events']} op events)")
    wall = s["wall_s"]
    gap_share = f"{s['host_gaps_s'] / wall:.1%}" if wall else "-"
    lines.append(f"{'host gaps':<{width}} {s['host_gaps_s'] * 1e3:10.3f}  {gap_share} of the {wall * 1e3:.3f} ms "
                 f"traced wall time (no op running; ops busy {s['busy_s'] * 1e3:.3f} ms)")
    lines += ["", f"top {len(s['top'])} kernels / ops by time:", f"{'name':<60} {'category':<18} "
              f"{'count':>6} {'ms':>10} {'share':>7}"]
    lines += [f"{t['name'][:60]:<60} {t['category']:<18} {t['count']:6d} {t['seconds'] * 1e3:10.3f} "
              f"{t['share']:7.1%}" for t in s["top"]]
    return "\n".join(lines)
