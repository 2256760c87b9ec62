"""Choosing one set of indexes for the whole workload (the second half of ``index_advice``).

With HypoPG (``_verified``): every candidate of every statement is created
hypothetically at once and each statement is explained again, so the planner
itself picks, per statement, the index it would use (dexter's approach). The
indexes used where a statement's cost falls by ``min_saving_pct`` form the
first set. A shorter index is dropped when a longer one with the same leading
columns is in the set (it serves the same statements); a table keeps at most
``max_indexes_per_table``, by benefit (each statement's total time, or its plan
cost for a statement given by hand, times its saving). A final pass with only
the chosen set gives each statement's predicted cost; an index no plan uses is
dropped, and a statement that lost its saving to the pruning gets its own
index back (at most three passes).

Without HypoPG (``_unverified``): a table access's first candidate is advised
when the current plan reads that table by a sequential scan of at least 1,000
rows and keeps at most a fifth of them. ``verified`` is False and sizes are
estimated from ``pg_stats`` widths.
"""

from __future__ import annotations

import math
import re

import psycopg

from takealook.analyzers.db.candidates import IndexCandidate
from takealook.analyzers.db.catalog import Relation, quote_ident
from takealook.analyzers.db.explain import EXPLAIN_ERRORS, Explainer, Plan
from takealook.analyzers.db.findings import Finding
from takealook.analyzers.db.hypo import Hypo, missing_message
from takealook.analyzers.db.advice_types import Job, SkippedStatement, SuggestedIndex
from takealook.analyzers.db.options import IndexOptions

_UNVERIFIED_MIN_ROWS = 1_000
_UNVERIFIED_KEEP_RATIO = 0.2


def select(session, explainer: Explainer, jobs: list[Job], options: IndexOptions, progress=None):
    """(suggested indexes, skipped statements, finding when HypoPG is missing or None)."""
    hypo = Hypo.open(session)
    if hypo is None:
        finding = Finding("missing_extension", "low", "HypoPG is not available: index advice is not verified",
                          detail="without hypothetical indexes the advice comes from the parse tree and "
                                 "the current plans only", fix=missing_message(session), subject="hypopg",
                          data={"extension": "hypopg"})
        indexes, skipped = _unverified(jobs, options)
        return indexes, skipped, finding
    try:
        indexes, skipped = _verified(hypo, explainer, jobs, options, progress)
    finally:
        hypo.reset()
    return indexes, skipped, None


# --------------------------------------------------------------------------- verified


def _verified(hypo: Hypo, explainer: Explainer, jobs: list[Job], options: IndexOptions, progress):
    candidates = {c.key: c for job in jobs for c in job.candidates}
    key_by_oid = _create(hypo, candidates.values())
    helped: dict[Job, set] = {}
    savings: dict[Job, float] = {}
    unproved: dict[Job, set] = {}  # an expression index HypoPG cannot cost (see _expression_picks)
    out: list[SkippedStatement] = []
    for number, job in enumerate(jobs, 1):
        if progress:
            progress("try hypothetical indexes", number, len(jobs))
        plan = _explain(explainer, job, out)
        if plan is None:
            continue
        used = _used(plan, key_by_oid)
        saving = _saving(job, plan)
        if used and saving >= options.min_saving_pct:
            helped[job] = used
            savings[job] = saving
        elif _expression_picks(job):
            unproved[job] = used
        else:
            out.append(job.skip(_no_saving(used, saving, options), "no_saving"))
    weights = {key: 0.0 for key in candidates}
    for job, used in helped.items():
        for key in used:
            weights[key] += _weight(job) * savings[job] / 100.0
    pruned = _prune(set().union(*helped.values()), candidates)
    chosen = _cap(pruned, candidates, weights, options)
    capped = pruned - chosen
    chosen, effects, lost, sizes = _final_pass(hypo, explainer, helped, chosen, capped, candidates, options,
                                               progress)
    for job in lost:
        if helped[job] & capped:
            out.append(job.skip(f"its index lost to heavier statements on the same table (at most "
                                f"{options.max_indexes_per_table} new indexes per table)", "table_limit"))
        else:
            out.append(job.skip("no saving with the chosen set of indexes", "no_saving"))
    indexes = [_suggestion(candidates[key], [(job, plan) for job, (plan, used) in effects.items() if key in used],
                           sizes.get(key), True) for key in chosen]
    return _ranked(indexes + _unproved(unproved, candidates, {i.create_sql for i in indexes})), out


def _create(hypo: Hypo, candidates) -> dict[int, tuple]:
    key_by_oid = {}
    for candidate in candidates:
        try:
            key_by_oid[hypo.create(candidate.definition())] = candidate.key
        except psycopg.Error:
            continue  # HypoPG rejects some definitions (an expression it cannot type): not a candidate then
    hypo.session.end()
    return key_by_oid


def _explain(explainer: Explainer, job: Job, out: list) -> Plan | None:
    try:
        return explainer.explain(job.parsed)
    except EXPLAIN_ERRORS as error:
        out.append(job.skip(f"cannot plan: {explainer.session.describe_error(error)}", "cannot_plan"))
        return None


def _used(plan: Plan, key_by_oid: dict[int, tuple]) -> set:
    return {key_by_oid[oid] for oid in (Hypo.oid_of(name) for name in plan.index_names) if oid in key_by_oid}


def _saving(job: Job, plan: Plan) -> float:
    before = job.before.total_cost
    return 100.0 * (before - plan.total_cost) / before if before > 0 else 0.0


def _weight(job: Job) -> float:
    return job.item.total_ms if job.item.total_ms is not None else job.before.total_cost


def _no_saving(used: set, saving: float, options: IndexOptions) -> str:
    if not used:
        return "no candidate index is used by the plan (the table is small or the condition not selective)"
    return f"the best candidate saves only {saving:.0f}% of the plan cost (needs {options.min_saving_pct:g}%)"


# Candidate keys hold None beside strings (no operator class): order them by repr, never directly.


def _prune(keys: set, candidates: dict) -> set:
    """Drop an index whose columns are the leading columns of another chosen one."""
    return {k for k in keys if not any(candidates[k].is_prefix_of(candidates[o]) for o in keys if o != k)}


def _cap(keys: set, candidates: dict, weights: dict, options: IndexOptions) -> set:
    by_table: dict[str, list] = {}
    for key in keys:
        by_table.setdefault(candidates[key].table, []).append(key)
    kept = set()
    for table_keys in by_table.values():
        table_keys.sort(key=lambda k: (-weights.get(k, 0.0), repr(k)))
        kept.update(table_keys[: options.max_indexes_per_table])
    return kept


def _final_pass(hypo, explainer, helped, chosen, capped, candidates, options, progress):
    effects, lost, sizes = {}, [], {}
    for attempt in range(3):
        hypo.reset()
        key_by_oid = _create(hypo, [candidates[k] for k in sorted(chosen, key=repr)])
        effects, lost = {}, []
        for number, job in enumerate(helped, 1):
            if progress:
                progress("check the chosen set", number, len(helped))
            plan = _explain(explainer, job, [])
            used = _used(plan, key_by_oid) if plan else set()
            if plan is not None and used and _saving(job, plan) >= options.min_saving_pct:
                effects[job] = (plan, used)
            else:
                lost.append(job)
        in_use = set().union(*(used for _, used in effects.values()))
        restore = set().union(*(helped[job] for job in lost)) - chosen - capped if lost else set()
        if attempt < 2 and restore:
            chosen = chosen | restore
            continue
        if attempt < 2 and chosen - in_use:
            chosen = chosen & in_use
            continue
        chosen, effects, key_by_oid = _simplify(hypo, explainer, chosen, effects, key_by_oid, candidates, options)
        sizes = {key: hypo.size(oid) for oid, key in key_by_oid.items() if key in chosen}
        hypo.session.end()
        break
    return chosen & set().union(*(used for _, used in effects.values())), effects, lost, sizes


_KEEP_SAVING = 0.95  # a simpler set must keep 95% of each statement's saving


def _simplify(hypo, explainer, chosen, effects, key_by_oid, candidates, options):
    """Drop a chosen index, or replace it by a candidate of its leading columns, when that serves as well.

    The planner prefers (customer_id, status) to (customer_id) by a hair when
    both exist, though five rows per customer leave nothing for the second
    column to do; and it may pick a new (id, category) where the primary key on
    id serves nearly as well. An index that is not needed costs space and
    every write, so a simpler set wins when each statement it serves keeps
    95% of its saving (and at least ``min_saving_pct``).
    """
    oid_by_key = {key: oid for oid, key in key_by_oid.items()}
    for key in sorted(chosen, key=lambda k: (-len(candidates[k].columns), repr(k))):
        long = candidates[key]
        shorter = sorted((c for c in candidates.values() if c.is_prefix_of(long) and c.key not in chosen),
                         key=lambda c: len(c.columns))
        served = {job: plan for job, (plan, used) in effects.items() if key in used}
        for short in [None, *shorter]:
            trial = _try_replacement(hypo, explainer, oid_by_key, long, short, served, options)
            if trial is not None:
                chosen = (chosen - {key}) | ({short.key} if short else set())
                for job, (plan, used) in trial.items():
                    effects[job] = (plan, used & chosen)
                break
    return chosen, effects, {oid: key for key, oid in oid_by_key.items()}


def _try_replacement(hypo, explainer, oid_by_key, long, short, served, options):
    """Swap ``long`` for ``short`` (or for nothing) among the hypothetical indexes; keep it if all still gain."""
    hypo.drop(oid_by_key.pop(long.key))
    short_oid = None
    if short is not None:
        try:
            short_oid = hypo.create(short.definition())
            oid_by_key[short.key] = short_oid
        except psycopg.Error:
            short = None
    key_by_oid = {oid: key for key, oid in oid_by_key.items()}
    results: dict | None = {} if short is not None or short_oid is None else None
    for job, plan in served.items():
        trial = _explain(explainer, job, [])
        before = job.before.total_cost
        if (trial is None or before - trial.total_cost < _KEEP_SAVING * (before - plan.total_cost)
                or _saving(job, trial) < options.min_saving_pct):
            results = None
            break
        results[job] = (trial, _used(trial, key_by_oid))
    if results is not None:
        return results
    if short_oid is not None:
        hypo.drop(oid_by_key.pop(short.key))
    oid_by_key[long.key] = hypo.create(long.definition())
    return None


# --------------------------------------------------------------------------- unverified


def _expression_picks(job: Job) -> list[IndexCandidate]:
    """Expression candidates HypoPG cannot prove but the column statistics support.

    A hypothetical expression index has no statistics (ANALYZE gathers them
    for a real one), so the planner costs ``lower(email) = $1`` at its default
    selectivity of 0.5% and rarely prefers the index. When the column under
    the expression is selective (a value matches at most 1% of a table of at
    least 1,000 rows) and the plan reads the table sequentially, the
    expression index is advised, ``verified=False``.
    """
    picks = []
    mine = {c.key for c in job.candidates}
    for candidate in job.first_variants:
        relation = candidate.relation
        if candidate.key not in mine or not candidate.expressions[0] or not candidate.equality_prefix:
            continue
        names = [c for c in relation.columns if re.search(rf"\b{re.escape(c.name)}\b", candidate.columns[0])]
        distinct = max((c.n_distinct or 0.0 for c in names), default=0.0)
        if (relation.reltuples >= _UNVERIFIED_MIN_ROWS and distinct >= 100
                and _scans_table(job.before, relation)):
            picks.append(candidate)
    return picks


def _unproved(jobs: dict[Job, set], candidates: dict, already: set[str]) -> list[SuggestedIndex]:
    """Unverified advice for statements whose gain hinges on an expression index.

    The indexes their plans used beside it (a join's other side) go with it:
    once the expression index exists and is analyzed, they are what the join needs.
    """
    by_key: dict[tuple, tuple[IndexCandidate, list]] = {}
    for job, used in jobs.items():
        for candidate in _expression_picks(job) + [candidates[key] for key in sorted(used, key=repr)]:
            by_key.setdefault(candidate.key, (candidate, []))[1].append((job, None))
    out = [_suggestion(c, pairs, _estimated_size(c), False) for c, pairs in by_key.values()]
    return [index for index in out if index.create_sql not in already]


def _unverified(jobs: list[Job], options: IndexOptions):
    chosen: dict[tuple, IndexCandidate] = {}
    helped: dict[tuple, list[Job]] = {}
    out: list[SkippedStatement] = []
    for job in jobs:
        mine = {c.key for c in job.candidates}
        picks = [c for c in job.first_variants if c.key in mine and _scans_for_few_rows(job.before, c.relation)]
        if not picks:
            out.append(job.skip("the current plan reads no large table for few rows (unverified: "
                                "HypoPG is not available to try indexes)", "no_saving"))
        for candidate in picks:
            chosen.setdefault(candidate.key, candidate)
            helped.setdefault(candidate.key, []).append(job)
    weights = {key: sum(_weight(job) for job in jobs_) for key, jobs_ in helped.items()}
    keys = _cap(_prune(set(chosen), chosen), chosen, weights, options)
    for key in set(chosen) - keys:  # a pruned prefix: its statements go to the longer index
        longer = next((k for k in keys if chosen[key].is_prefix_of(chosen[k])), None)
        if longer is not None:
            helped[longer] = list(dict.fromkeys(helped[longer] + helped[key]))
    indexes = [_suggestion(chosen[key], [(job, None) for job in helped[key]],
                           _estimated_size(chosen[key]), False) for key in keys]
    return _ranked(indexes), out


def _scans_for_few_rows(plan: Plan, relation: Relation) -> bool:
    if relation.reltuples < _UNVERIFIED_MIN_ROWS:
        return False
    rows = _scanned_rows(plan, relation)
    return bool(rows) and sum(rows) <= _UNVERIFIED_KEEP_RATIO * relation.reltuples


def _scans_table(plan: Plan, relation: Relation) -> bool:
    return bool(_scanned_rows(plan, relation))


def _scanned_rows(plan: Plan, relation: Relation) -> list[float]:
    names = {f"{relation.schema}.{relation.name}"} | {p.replace('"', "") for p in relation.partitions}
    return [scan.rows for scan in plan.seq_scans if scan.table in names]


def _estimated_size(candidate: IndexCandidate) -> int:
    """Leaf pages of a btree at 90% fill: 8-byte tuple header + aligned key + 4-byte line pointer."""
    relation = candidate.relation
    width = 0
    for column, is_expr in zip(candidate.columns, candidate.expressions):
        info = None if is_expr else relation.column(column)
        width += (info.avg_width if info and info.avg_width else 8)
    per_tuple = 8 + 8 * math.ceil(width / 8) + 4
    per_page = max(1, int((8192 - 24 - 16) * 0.9 // per_tuple))
    return (math.ceil(max(relation.reltuples, 1) / per_page) + 1) * 8192


# --------------------------------------------------------------------------- results


def _suggestion(candidate: IndexCandidate, jobs: list[tuple[Job, Plan | None]], size: int | None,
                verified: bool) -> SuggestedIndex:
    relation = candidate.relation
    effects = tuple(sorted((job.effect(plan.total_cost if plan else None) for job, plan in jobs),
                           key=lambda e: -(e.total_ms or 0.0)))
    benefit = sum((e.total_ms or 0.0) * (e.saving_pct or 0.0) / 100.0 for e in effects)
    name = index_name(relation.name, candidate.columns)
    return SuggestedIndex(
        table=candidate.table, columns=candidate.columns, using=candidate.using,
        definitions=tuple(candidate.display_columns()),
        create_sql=create_sql(candidate, name), size_bytes=size, verified=verified, statements=effects,
        name=name, benefit_ms=round(benefit, 3), table_rows=relation.reltuples,
        table_writes_per_s=None if relation.writes_per_s is None else round(relation.writes_per_s, 3),
        existing_indexes=len(relation.indexes), partitioned=candidate.partitioned)


def _ranked(indexes: list[SuggestedIndex]) -> list[SuggestedIndex]:
    def cost_saved(index: SuggestedIndex) -> float:
        return sum(e.cost_before - (e.cost_after or e.cost_before) for e in index.statements)

    return sorted(indexes, key=lambda i: (-i.benefit_ms, -cost_saved(i), -len(i.statements), i.table,
                                         i.definitions))


def index_name(table: str, columns) -> str:
    """PostgreSQL's own naming (table_col1_col2_idx), expressions reduced to their words, 63 bytes at most."""
    parts = [re.sub(r"[^a-z0-9]+", "_", c.lower()).strip("_") for c in columns]
    base = "_".join([table] + [p for p in parts if p])
    return base[: 63 - len("_idx")] + "_idx"


def create_sql(candidate: IndexCandidate, name: str) -> str:
    columns = ", ".join(candidate.column_sql())
    using = "" if candidate.using == "btree" else f" USING {candidate.using}"
    relation = candidate.relation
    if not candidate.partitioned:
        return f"CREATE INDEX CONCURRENTLY {quote_ident(name)} ON {candidate.table}{using} ({columns});"
    # CONCURRENTLY is refused on a partitioned table: build each partition's index without blocking
    # writes, then attach them to an index created on the parent alone (PostgreSQL docs, CREATE INDEX).
    lines = [f"CREATE INDEX {quote_ident(name)} ON ONLY {candidate.table}{using} ({columns});"]
    for leaf in relation.partitions:
        leaf_schema, _, leaf_table = leaf.rpartition(".")
        leaf_index = index_name(leaf_table.strip('"'), candidate.columns)
        lines.append(f"CREATE INDEX CONCURRENTLY {quote_ident(leaf_index)} ON {leaf}{using} ({columns});")
        lines.append(f"ALTER INDEX {quote_ident(relation.schema)}.{quote_ident(name)} "
                     f"ATTACH PARTITION {leaf_schema}.{quote_ident(leaf_index)};")
    return "\n".join(lines)
