"""Carrying out a sync plan: warm checks, copies, prune, the report.

Per source image, :data:`~.plan.LOOKUPS_PER_COPY` times ``-J`` at once, ``-J`` of them
copying:

1. A tag whose every destination is a present immutable tag costs nothing.
2. When the copy is byte for byte (no filter, no platform subset), one HEAD per
   destination asks what its tag points at and, when one has the tag, one HEAD asks
   the source for its digest; a destination already holding it is skipped.
3. The first destination that needs it gets the image from the source, through
   the copy engine (which moves only the blobs the destination lacks, and mounts
   those the run has seen elsewhere on that registry). Every further destination
   is fed from the first that holds the image, verbatim: each blob is read from the
   source at most once per run, whatever the number of destinations.

A warm run is HEADs and nothing else, so its wall time is the link's latency times
the HEADs each image waits for in turn (one destination's, then the source's),
divided by the images in flight: hence many more images checked than copied at once.
How many images are in their checks follows the answers (:mod:`.inflight`): up to
every checking thread over a slow link, a few where each HEAD is CPU work. Over TLS
the HEADs share one HTTP/2 connection per registry (multiplexed); over HTTP/1.1 they
share the pool's connections.

``--prune`` then deletes, in each destination repository of the plan, the tags the
rules select that the source no longer has; nothing outside that scope is touched.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from .. import library
from ..bulk import single_input
from ..errors import ImageNotFoundError, OccystrapError, PlatformMismatchError
from ..redact import redact_text, redact_uri
from ..transport.clock import get_clock
from ..workers import parallel
from .events import Events
from .inflight import InFlight, Slot
from .plan import LOOKUPS_PER_COPY, Place, Plan, Planner, Scope, Target, Task, with_query

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("occystrap.sync")


@dataclass(frozen=True)
class Result:
    """What became of one (source image, destination) pair, or one deletion."""

    source: str
    destination: str
    state: str  # copied, skipped, failed, would-copy; deleted, would-delete
    digest: str | None = None
    error: str | None = None
    reason: str | None = None  # why it was skipped, when not because it is there already

    @property
    def line(self) -> str | None:
        """What ``--dry-run`` prints for it, in plan order."""
        if self.state == "would-copy":
            return redact_text(f"{redact_uri(self.source)} -> {redact_uri(self.destination)}")
        if self.state == "would-delete":
            return f"delete {redact_uri(self.destination)}"
        return None

    def as_dict(self) -> dict[str, Any]:
        out = {"source": redact_uri(self.source), "destination": redact_uri(self.destination),
               "state": self.state}
        if self.digest:
            out["digest"] = self.digest
        if self.error:
            out["error"] = redact_text(self.error)
        if self.reason:
            out["reason"] = redact_text(self.reason)
        return out


class Runner:
    def __init__(self, ctx: Context, planner: Planner, events: Events, *, dry_run: bool):
        self.ctx = ctx
        self.planner = planner
        self.events = events
        self.dry_run = dry_run
        self._copying = threading.Semaphore(ctx.settings.image_parallel)  # -J
        self._copies = 0  # images copying now: each holds a thread besides the checks
        self._copies_lock = threading.Lock()
        self._heads = InFlight(LOOKUPS_PER_COPY * ctx.settings.image_parallel, get_clock(ctx))

    # --- copies ----------------------------------------------------------------

    def run(self, plan: Plan) -> list[Result]:
        batches = parallel(self._task, plan.tasks,
                           LOOKUPS_PER_COPY * self.ctx.settings.image_parallel,
                           self.ctx.cancel.child(), name="sync",
                           width=lambda: self._heads.limit + self._copies)
        return [r for batch in batches for r in batch]

    def _task(self, task: Task) -> list[Result]:
        events = self.events.enabled  # else no event is built (nor its URIs redacted)
        if task.error is not None:
            if events:
                self.events.emit("image", state="failed", source=redact_uri(task.source),
                                 error=redact_text(task.error))
            return [Result(task.source, "", "failed", error=task.error)]
        shown = redact_uri(task.source) if events else ""
        if events:
            self.events.emit("image", state="started", source=shown)
        results: list[Result] = []
        pending = [t for t in task.targets if not t.present and t.error is None]
        results += [Result(task.source, t.uri, "skipped") for t in task.targets
                    if t.present and t.error is None]
        results += [Result(task.source, t.uri, "failed", error=t.error) for t in task.targets
                    if t.error is not None]
        verbatim = not task.spec.filters and not task.spec.platforms
        held: str | None = None  # the digest the destinations should hold
        feeder: Target | None = None  # a destination holding it, to feed the others
        holds: dict[Target, str | None] = {}  # what each destination's tag points at
        try:
            if pending and verbatim and task.place is not None:
                with self._heads.timing() as heads:
                    for target in pending:
                        try:
                            holds[target] = self._digest(target.place, heads)
                        except OccystrapError as e:  # that destination fails, not the others
                            results.append(Result(task.source, target.uri, "failed",
                                                  error=str(e)))
                    pending = [t for t in pending if t in holds]
                    # The source is asked only when a destination has the tag (or in a
                    # dry run, to report a missing one): otherwise the image is copied
                    # whatever its digest, and a cold tag costs one request less.
                    if pending and (any(holds.values()) or self.dry_run) \
                            and self._knows(task.place):
                        held = self._digest(task.place, heads)
                        if held is None:
                            raise ImageNotFoundError(f"{redact_uri(task.source)}: not found")
        except Exception as e:  # noqa: BLE001 - this image fails, the others go on
            error = str(e) if isinstance(e, OccystrapError) else \
                f"unexpected {type(e).__name__}: {e}"
            results += [Result(task.source, t.uri, "failed", error=error) for t in pending]
            pending = []
        for target in pending:
            result = self._one(task, target, held, feeder, holds)
            results.append(result)
            if result.state in ("copied", "skipped") and result.digest:
                held, feeder = held or result.digest, feeder or target
        for r in results if events else ():
            self.events.emit("image", state=r.state, source=shown,
                             destination=redact_uri(r.destination), digest=r.digest,
                             **{k: redact_text(v) for k, v in (("error", r.error),
                                                                ("reason", r.reason)) if v})
        return results

    def _knows(self, place: Place) -> bool:
        return self.planner.lister(place).knows_digests

    def _digest(self, place: Place, slot: Slot | None = None) -> str | None:
        try:
            lister = self.planner.lister(place)
        except OccystrapError:
            return None  # a destination no lister reads (tar://, dir://): the copy tells
        if not lister.knows_digests:
            return None
        if slot is not None:
            slot.heads += 1
        try:
            return lister.digest(place.repository, place.tag)
        except ImageNotFoundError:
            return None  # not there (an OCI layout not written yet)

    def _one(self, task: Task, target: Target, held: str | None, feeder: Target | None,
             holds: dict[Target, str | None]) -> Result:
        try:
            if held is not None:
                current = holds[target] if target in holds else self._digest(target.place)
                if current == held:
                    if task.spec.referrers and not self.dry_run:  # signed since, maybe
                        self._referrers(task, target)
                    return Result(task.source, target.uri, "skipped", held)
            # from a destination holding it: not one more read of the source (its blobs
            # are still mounted where the run saw them on the target's registry)
            fed = feeder is not None
            source = feeder.uri if feeder is not None else task.source
            if self.dry_run:
                return self._dry(task, source, target, fed=fed, compared=held is not None)
            digest, unchanged = self._copy(task, source, target, fed=fed)
            return Result(source, target.uri, "skipped" if unchanged else "copied", digest)
        except PlatformMismatchError as e:  # nothing of the subset to copy: not a failure
            return Result(task.source, target.uri, "skipped", reason=str(e))
        except OccystrapError as e:
            return Result(task.source, target.uri, "failed", error=str(e))
        except Exception as e:  # one image's bug must not stop the others; still reported
            log.debug("%s failed", task.source, exc_info=True)
            return Result(task.source, target.uri, "failed",
                          error=f"unexpected {type(e).__name__}: {e}")

    def _dry(self, task: Task, source: str, target: Target, *, fed: bool,
             compared: bool) -> Result:
        """What the copy would do, from its reads alone. The HEADs of a verbatim copy
        said already that it is needed when they ``compared`` the source's digest;
        else (a lister that cannot say digests, filters, platforms), the engine is asked
        whether the destination holds what it would write (the source's manifest, the
        destination tag's HEAD, the layer cache's memo: what a warm copy reads too)."""
        if fed or (compared and not task.spec.filters and not task.spec.platforms):
            return Result(source, target.uri, "would-copy")
        with single_input(self.ctx, self._selecting(task, source, fed), "sync") as opened:
            found = library.held(opened, target.uri, filters=task.spec.filters,
                                 session=self.ctx)
        if found is None:
            return Result(source, target.uri, "would-copy")
        return Result(source, target.uri, "skipped", found.manifest_digest)

    @staticmethod
    def _selecting(task: Task, source: str, fed: bool) -> str:
        """``source`` with the platforms to copy (from another destination: all of it)."""
        if task.spec.platforms and not fed:
            return with_query(source, platforms=task.spec.platforms)
        return with_query(source, all_platforms="true")

    def _copy(self, task: Task, source: str, target: Target, *, fed: bool
              ) -> tuple[str | None, bool]:
        """Through the engine; from another destination, verbatim (it is filtered already)."""
        spec = task.spec
        filters = () if fed else spec.filters
        with self._copy_slot(), single_input(self.ctx, self._selecting(task, source, fed),
                                             "sync") as opened:
            result = library.copy(opened, target.uri, filters=filters, session=self.ctx,
                                  referrers=spec.referrers, referrer_types=spec.referrer_types)
        if result.problems:
            raise OccystrapError("verify failed: " + "; ".join(result.problems))
        return result.manifest_digest, bool(result.details.get("unchanged"))

    @contextlib.contextmanager
    def _copy_slot(self) -> Iterator[None]:
        """One of the -J images copying, counted (``width``) while it copies."""
        with self._copying:
            with self._copies_lock:
                self._copies += 1
            try:
                yield
            finally:
                with self._copies_lock:
                    self._copies -= 1

    def _referrers(self, task: Task, target: Target) -> None:
        """The image is there already: its referrers may not be (a new signature)."""
        with self._copy_slot(), single_input(self.ctx, task.source, "sync") as opened:
            result = library.copy_referrers(opened, target.uri, session=self.ctx,
                                            referrer_types=task.spec.referrer_types)
        if result.problems:
            raise OccystrapError("verify failed: " + "; ".join(result.problems))

    # --- prune -----------------------------------------------------------------

    def prune(self, plan: Plan) -> list[Result]:
        """Per destination repository, with every scope (source repository and rules)
        mapped to it: a tag is deleted when a scope selects it, no source repository
        mapped there has it, and no image of this run is copied to it."""
        scopes: dict[tuple[str, str, str, str], list[Scope]] = {}
        for scope in plan.scopes:
            scopes.setdefault(scope.destination.repository_key, []).append(scope)
        copied: dict[tuple[str, str, str, str], set[str]] = {}
        for task in plan.tasks:
            for target in task.targets:
                copied.setdefault(target.place.repository_key, set()).add(target.place.tag)
        work = []
        for key, group in scopes.items():
            if plan.holds(group[0].destination):
                log.info("not pruning %s: a source mapped to it was not listed, or "
                         "another shard copies to it", redact_uri(group[0].destination.where))
            else:
                work.append((group, copied.get(key, set())))
        batches = parallel(lambda w: self._prune_one(*w), work,
                           self.ctx.settings.image_parallel, self.ctx.cancel.child(),
                           name="prune")
        return [r for batch in batches for r in batch]

    def _prune_one(self, scopes: list[Scope], copied: set[str]) -> list[Result]:
        place = scopes[0].destination
        where = place.where
        try:
            lister = self.planner.lister(place)
            try:
                present = sorted(lister.tags(place.repository))
            except ImageNotFoundError:
                return []
        except OccystrapError as e:
            return [Result("", where, "failed", error=str(e))]
        kept = copied.union(*(s.source_tags for s in scopes))
        gone = [t for t in present if t not in kept and any(
            s.pattern.tag_matches(t) and s.rules.in_scope(t) for s in scopes)]
        # together: tags of one manifest may only go together (distribution 2.x)
        done = {} if self.dry_run or not gone else lister.delete_tags(place.repository, gone)
        results = []
        for tag in gone:
            error = done.get(tag)
            state = "would-delete" if self.dry_run else "failed" if error else "deleted"
            results.append(Result("", f"{where}:{tag}", state,
                                  error=str(error) if error else None))
        for r in results:
            self.events.emit("delete", state=r.state, destination=redact_uri(r.destination),
                             **({"error": redact_text(r.error)} if r.error else {}))
        return results


def report(results: list[Result], deletions: list[Result], ctx: Context, started: float,
           shard: tuple[int, int] | None) -> dict[str, Any]:
    """The final JSON report."""
    counts: dict[str, int] = {}
    for r in results + deletions:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {
        "ok": not any(r.state == "failed" for r in results + deletions),
        "counts": counts,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "elapsed": round(time.monotonic() - started, 3),
        "stats": dict(ctx.stats.values),
        "images": [r.as_dict() for r in results],
        "deletions": [r.as_dict() for r in deletions],
    }
