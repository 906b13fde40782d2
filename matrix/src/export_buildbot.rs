//! The Buildbot fragment of `fruix matrix export --format buildbot`: a
//! Python module a `master.cfg` imports, defining one builder per cell, a
//! collect builder and a driver builder, and the schedulers that start
//! them. See the module text it writes for how to use it.

use crate::expand::Cell;
use crate::export::ExportOptions;
use crate::file::MatrixFile;

/// A Python string literal of `s` (JSON's escapes are Python's).
fn py(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn py_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| py(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The fragment for the `cells` of `file`, whose path on the workers is
/// `matrix`.
pub fn fragment(
    file: &MatrixFile,
    cells: &[Cell],
    matrix: &str,
    options: &ExportOptions,
) -> String {
    let mut cell_lines = String::new();
    for c in cells {
        let tags = file.runner_tags.of(&c.id, c.machine.as_deref());
        let files = crate::export::cell_files(&c.id);
        cell_lines.push_str(&format!(
            "    ({}, {}, {}),\n",
            py(&c.id),
            py_list(tags),
            py_list(&files)
        ));
    }
    let cell_max_time =
        crate::export::cell_job_limit(file).map_or("None".to_string(), |secs| secs.to_string());
    let max_parallel = file
        .strategy
        .max_parallel
        .map_or("None".to_string(), |m| m.to_string());
    format!(
        r#"#
# Use it from master.cfg, this file beside it:
#
#     import fruix_matrix
#     fruix_matrix.configure(c)
#
# It adds to c["builders"] and c["schedulers"]:
#   - "fruix cell ID" for each cell: `fruix matrix run-cell`, then its cell
#     report, its machines file copy and its log (never results/, which
#     links the cell's build in the store), as a tar file, uploaded to the
#     master (fruix-cells/RUN/ID.tar in the master's directory);
#   - "fruix collect": downloads every cell's tar file (a missing one is
#     reported as missing by collect), then `fruix matrix collect`; its
#     result is the matrix's; report.json, junit.xml and the logs are uploaded
#     to fruix-reports/RUN on the master;
#   - "fruix matrix", the driver: triggers every cell and waits for them,
#     then triggers collect (also after failed cells). RUN is its build
#     number, which every cell report names (--pipeline-run) and collect
#     takes alone: a report of another run is never taken for this run's.
#     A ForceScheduler "fruix-matrix" starts it; add your own schedulers
#     for it as you wish.
# Workers: each cell's runner tags, from the matrix file's runner-tags, are
# the names of the workers its builder may use (the driver and collect use
# the default tags). The driver holds a worker while it waits: give those
# workers more than one build at a time.
# max-parallel is a master lock over the cell builders. With fail-fast (the
# matrix file's default), a cell that fails cancels the run's other cells:
# the builds started are stopped (run-cell gets SIGTERM and still writes
# its report, "cancelled", which is uploaded), the others never start
# (collect reports them missing).
# run-cell keeps the matrix's timeout and max-silent-time itself (it sees the
# build's output; Buildbot sees a line per stage, and a still-running line
# every 5 minutes of a long one): its step has no silence timeout, and at
# most CELL_MAX_TIME seconds (None: no limit).
# Give `source_steps` (steps checking out the repository holding the matrix
# file) to run first in every builder.

from buildbot.data import resultspec
from buildbot.plugins import schedulers, steps, util
from twisted.internet import defer

FRUIX = {fruix}
MATRIX = {matrix}
CELLS = [
{cell_lines}]
DEFAULT_WORKERS = {default}
MAX_PARALLEL = {max_parallel}
CELL_MAX_TIME = {cell_max_time}
RUN_CELL_ARGS = {run_cell_args}
COLLECT_ARGS = {collect_args}
RUN = util.Interpolate("%(prop:fruix_run)s")
FAIL_FAST = {fail_fast}
# Packs those of its arguments (files) that are there, as a cell stopped
# early has not written them all; an earlier build's tar file goes first.
PACK = ('rm -f fruix-cell.tar; for f do shift; [ -f "$f" ] && set -- "$@" "$f"; done; '
        'tar -cf fruix-cell.tar "$@"')


class CancelOtherCells(steps.BuildStep):
    """fail-fast: cancels the other cells of this run (their build requests,
    and the builds started from them)."""

    @defer.inlineCallbacks
    def run(self):
        mine = [r.id for r in self.build.requests]
        reason = "fruix fail-fast: " + self.build.builder.name + " failed"
        for bsid in set(r.bsid for r in self.build.requests):
            others = yield self.master.data.get(
                ("buildrequests",),
                filters=[resultspec.Filter("buildsetid", "eq", [bsid]),
                         resultspec.Filter("complete", "eq", [False])])
            for r in others:
                if r["buildrequestid"] not in mine:
                    yield self.master.data.control(
                        "cancel", dict(reason=reason),
                        ("buildrequests", r["buildrequestid"]))
        return util.SUCCESS


def cell_failed(step):
    return FAIL_FAST and step.build.results in (util.FAILURE, util.EXCEPTION)


class TriggerCells(steps.Trigger):
    """Triggers the cells and waits for them. A matrix whose cells were
    cancelled (by fail-fast, or by hand) did not pass: it fails, as
    `fruix matrix run` does, rather than looking cancelled itself."""

    @defer.inlineCallbacks
    def worstStatus(self, overall_results, rclist, unimportant_brids):
        results = yield super().worstStatus(overall_results, rclist, unimportant_brids)
        return util.FAILURE if results == util.CANCELLED else results


def configure(c, source_steps=()):
    c.setdefault("builders", [])
    c.setdefault("schedulers", [])
    lock = util.MasterLock("fruix-matrix-cells", maxCount=MAX_PARALLEL) if MAX_PARALLEL else None
    for cell, workers, files in CELLS:
        f = util.BuildFactory()
        for s in source_steps:
            f.addStep(s)
        f.addStep(steps.RemoveDirectory(dir="build/fruix-cell", name="clean"))
        f.addStep(steps.ShellCommand(
            name="run-cell", interruptSignal="TERM", timeout=None, maxTime=CELL_MAX_TIME,
            command=[FRUIX, "matrix", "run-cell", MATRIX, "--cell", cell,
                     "--report-dir", "fruix-cell", "--pipeline-run", RUN] + RUN_CELL_ARGS))
        f.addStep(steps.ShellCommand(
            name="pack", alwaysRun=True,
            command=["sh", "-c", PACK, "pack"] + ["fruix-cell/" + name for name in files]))
        f.addStep(steps.FileUpload(
            name="upload", alwaysRun=True, workersrc="fruix-cell.tar",
            masterdest=util.Interpolate("fruix-cells/%(prop:fruix_run)s/" + cell + ".tar")))
        f.addStep(CancelOtherCells(
            name="fail-fast", alwaysRun=True, doStepIf=cell_failed,
            hideStepIf=lambda results, step: results == util.SKIPPED))
        c["builders"].append(util.BuilderConfig(
            name="fruix cell " + cell, workernames=workers or DEFAULT_WORKERS,
            workerbuilddir="fruix-cell-" + cell, factory=f,
            locks=[lock.access("counting")] if lock else []))

    f = util.BuildFactory()
    for s in source_steps:
        f.addStep(s)
    f.addStep(steps.RemoveDirectory(dir="build/fruix-cells", name="clean cells"))
    f.addStep(steps.RemoveDirectory(dir="build/fruix-report", name="clean report"))
    for cell, _, _ in CELLS:
        f.addStep(steps.FileDownload(
            name="download " + cell, haltOnFailure=False, flunkOnFailure=False,
            warnOnFailure=True,
            mastersrc=util.Interpolate("fruix-cells/%(prop:fruix_run)s/" + cell + ".tar"),
            workerdest="fruix-cells/" + cell + ".tar"))
    f.addStep(steps.ShellCommand(
        name="unpack",
        command=["sh", "-c", 'for t in fruix-cells/*.tar; do [ -f "$t" ] || continue; '
                 'd="${{t%.tar}}"; mkdir -p "$d" && tar -xf "$t" -C "$d"; done']))
    f.addStep(steps.ShellCommand(
        name="collect",
        command=[FRUIX, "matrix", "collect", MATRIX, "--from", "fruix-cells",
                 "--report-dir", "fruix-report", "--pipeline-run", RUN] + COLLECT_ARGS))
    f.addStep(steps.DirectoryUpload(
        name="upload report", alwaysRun=True, workersrc="fruix-report",
        masterdest=util.Interpolate("fruix-reports/%(prop:fruix_run)s")))
    c["builders"].append(util.BuilderConfig(
        name="fruix collect", workernames=DEFAULT_WORKERS,
        workerbuilddir="fruix-collect", factory=f))

    f = util.BuildFactory()
    run = {{"fruix_run": util.Interpolate("%(prop:buildnumber)s")}}
    f.addStep(TriggerCells(
        name="cells", schedulerNames=["fruix-cells"], waitForFinish=True,
        haltOnFailure=False, flunkOnFailure=True, set_properties=run))
    f.addStep(steps.Trigger(
        name="collect", schedulerNames=["fruix-collect"], waitForFinish=True,
        alwaysRun=True, set_properties=run))
    c["builders"].append(util.BuilderConfig(
        name="fruix matrix", workernames=DEFAULT_WORKERS,
        workerbuilddir="fruix-matrix", factory=f))

    c["schedulers"].append(schedulers.Triggerable(
        name="fruix-cells", builderNames=["fruix cell " + cell for cell, _, _ in CELLS]))
    c["schedulers"].append(schedulers.Triggerable(
        name="fruix-collect", builderNames=["fruix collect"]))
    c["schedulers"].append(schedulers.ForceScheduler(
        name="fruix-matrix", builderNames=["fruix matrix"]))
"#,
        fruix = py(&options.fruix),
        fail_fast = if file.strategy.fail_fast {
            "True"
        } else {
            "False"
        },
        matrix = py(matrix),
        default = py_list(&file.runner_tags.default),
        run_cell_args = py_list(&options.run_cell_args),
        collect_args = py_list(&options.collect_args),
    )
}
