#!/usr/bin/env bash
# Writes the figures the last scripts/test.sh run recorded (.devstack/figures/) into the
# "Figures of the last recorded run" section of docs/guarantees.md, so that document never
# carries numbers copied by hand. Run it after scripts/test.sh (or scripts/test.sh --long).
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

figures="$ROOT/.devstack/figures"
[[ -f "$figures/run.json" ]] || die "no recorded figures in ${figures#"$ROOT"/}: run scripts/test.sh first"
command -v python3 >/dev/null || apt_install python3
python3 - "$figures" "$ROOT/docs/guarantees.md" <<'PY'
import json, pathlib, sys

figures, document = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
run = json.loads((figures / "run.json").read_text())
def load(name):
    path = figures / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None

# Each chaos suite records how many events it ran (its default lives in the suite alone).
chaos_events = {name: (load(name) or {}).get("events", 0) for name in ("chaos", "chaos-kafka")}
lines = [
    f"Recorded by `scripts/test.sh` on {run['date']} at commit {run['commit']} ({run['cores']} cores; "
    f"{chaos_events['chaos']:,} chaos events on Kinesis, {chaos_events['chaos-kafka']:,} on Kafka, fuzz scale "
    f"{run['fuzz_scale']}), written here by `scripts/figures.sh`.",
    "",
]
def chaos_line(chaos, title, bus):
    relay, consumer = chaos["relay_faults"], chaos["consumer_faults"]
    return (
        f"- **{title}** (invariants 3, 4, 5): {chaos['events']:,} events of {chaos['reservations']:,} reservations; "
        f"injected {relay.get('failed records', 0):,} failed records, {relay.get('throttled calls', 0):,} throttled calls, "
        f"{relay.get('relay kills', 0):,} relay kills, {consumer.get('consumer kills', 0):,} consumer kills, "
        f"{consumer.get('store failures', 0):,} store failures, {consumer.get('throttling bursts', 0):,} throttling "
        f"bursts on the consumers' tables (the longest {consumer.get('longest burst', 0)} calls in a row); the audit found "
        f"**{chaos['missing']} missing and {chaos['misordered']} misordered** of {chaos['committed']:,} committed events, "
        f"**{chaos.get('stalled', 0)} reservations stalled**, among "
        f"{chaos['records_on_stream']:,} records on the {bus} ({chaos['duplicated_versions']:,} versions delivered more "
        f"than once). Delivered: the queue subscribed to the notifications topic received "
        f"**{chaos.get('messages_delivered', 0) - chaos.get('repeats_within_dedup_window', 0):,} "
        f"distinct notifications, one per event**, each reservation's in version order, under "
        f"{consumer.get('publish throttles', 0):,} throttled and {consumer.get('publish timeouts', 0):,} timed-out "
        f"publishes; {chaos.get('repeats_within_dedup_window', 0):,} repeats, all within the deduplication window "
        f"that SNS FIFO absorbs (moto does not), {chaos.get('republished_after_dedup_window', 0)} after it; "
        f"{chaos['seconds']} s."
    )

for name, title, bus in [("chaos", "Chaos suite", "stream"), ("chaos-kafka", "Chaos suite on Kafka", "Kafka topic")]:
    chaos = load(name)
    if chaos:
        lines.append(chaos_line(chaos, title, bus))
for name, title, bus in [
    ("load", "Load test", "Kinesis"),
    ("load-sharded", "Load test on a slot of 16 shards", "Kinesis"),
    ("load-kafka", "Load test on Kafka, a slot of 16 shards", "the Kafka topic"),
]:
    load_test = load(name)
    if load_test:
        statuses = ", ".join(f"{count:,} × {status}" for status, count in sorted(load_test["statuses"].items()))
        codes = ", ".join(f"{count:,} `{code}`" for code, count in sorted(load_test["codes"].items()))
        on_the_bus = load_test.get("events_on_the_bus", load_test.get("events_on_kinesis", 0))
        lines += [
            f"- **{title}** (invariant 2): {load_test['requests']:,} "
            f"concurrent requests for {load_test['capacity']} seats: {statuses} ({codes}); {on_the_bus} "
            f"ReservationCreated events on {bus}.",
        ]
regions = load("multi_region_publishing")
if regions:
    lines += [
        f"- **Several Regions, simulated** (invariants 3, 6): {regions['events']} events born in two Regions of a "
        f"global table; {regions['published_by_primary']} published by the primary's relay, "
        f"{regions['published_by_other']} by the other's, **{regions['published_by_both']} by both**; "
        f"{regions['replicated_writes']} writes replicated between the Regions.",
    ]
move = load("multi_region_move")
if move:
    lines += [
        f"- **A slot's home moved under traffic, simulated** (invariants 2-5): {move['bookings']} bookings, "
        f"{move['booked_in_old_home']} in the old home and {move['booked_in_new_home']} in the new one, "
        f"{move['cancelled']} cancelled right after the move ({move['created_in_one_region_cancelled_in_the_other']} "
        f"of them created in one Region and cancelled in the other); the move waited {move['move_waited_ms']:,} ms "
        f"(for {move['move_waited_for_reservations']} reservations, {move['move_waited_for_idempotency_records']} "
        f"idempotency records and both Regions' projectors and notifiers), clients waited out "
        f"{move['waited_out_503_home_moving']} "
        f"`home_moving` answers; {move['events_on_old_homes_bus']} events on the old home's bus and "
        f"{move['events_on_new_homes_bus']} on the new one's, **none on both, none missing**, both read models equal"
        + (f"; {move['replication']['reordered']} replicated writes arrived reordered and "
           f"{move['replication']['dropped_as_older']} were dropped as older" if "replication" in move else "") + ".",
    ]
failover = load("multi_region_failover")
if failover:
    lines += [
        f"- **A cut, then a failover, simulated** (invariant 3 as multi-region.md bounds it): "
        f"{failover['booked_before_the_cut']} bookings replicated before the cut, "
        f"{failover['booked_in_the_lost_region_while_cut']} made in the lost Region while cut off; the takeover "
        f"republished {failover['republished_by_the_takeover']} events and the new home booked "
        f"{failover['booked_after_the_takeover']} more; when the lost Region came back, the audit named "
        f"**{failover['audit_missing_after_the_return']} events missing, exactly its unreplicated bookings**, and the "
        f"slot counted {failover['slot_reserved_after_the_return']} of {failover['reservations_after_the_return']} "
        f"reservations (last writer wins kept the takeover's count); nothing notified twice.",
    ]
creation = load("multi_region_creation")
if creation:
    lines += [
        f"- **A slot asked for in two Regions at once, simulated** (invariant 2): created once, by the primary; "
        f"{creation['bookings']} bookings through both Regions without waiting for replication, "
        f"**{creation['confirmed']} confirmed for 10 seats**, {creation['sent_home_by_421']} sent home by 421, "
        f"{creation['slot_not_replicated_yet']} tries before the slot had replicated.",
    ]
race = load("multi_region_takeover_race")
if race:
    lines += [
        f"- **Two survivors taking over at once, simulated** (invariant 2): {len(race['regions'])} Regions, the "
        f"primary lost with a move from it and a move to it under way; **one heir** ({race['heir']}), the other "
        f"refused; slots taken: {race['slots_taken']}, moves to the lost Region aborted in their home: "
        f"{race['moves_to_lost_aborted']}; {race['bookings_after']} bookings ({race['booked_while_the_survivors_were_cut_off']} "
        f"while the survivors were cut off from each other), none overbooked, none frozen.",
    ]
reads = load("multi_region_move_reads")
if reads:
    lines += [
        f"- **A move right after a booking, simulated** (invariant 5): eventually consistent reads "
        f"{reads['stale_reads_ms']:,} ms behind, the booking's reservation and idempotency record "
        f"{reads['reservation_and_record_delayed_ms']:,} ms behind its slot update; the move waited "
        f"{reads['move_waited_ms']:,} ms for {reads['move_waited_for_reservations']} reservation and "
        f"{reads['move_waited_for_idempotency_records']} idempotency record, and **the retry in the new home "
        f"replayed the first answer** ({reads['replication']['reordered']} writes arrived reordered).",
    ]
abort = load("multi_region_abort_race")
if abort:
    ended = "the abort" if abort["aborted"] else "the finish"
    lines += [
        f"- **An abort racing a move's finish, simulated** (invariant 2): **only {ended} took effect**; "
        f"{abort['bookings']} bookings through both Regions cut off from each other, none overbooked.",
    ]
replaced = load("multi_region_replaced_version")
if replaced:
    lines += [
        f"- **A lost Region's version replaced by the heir's, simulated** (invariant 3): the audit of the lost "
        f"Region's bus named **{replaced['named_replaced']}** replaced event.",
    ]
fuzz, fuzz_jwt = load("api_fuzz"), load("api_fuzz_jwt")
if fuzz:
    jwt = (f"; under AuthMode JWT as a guest, {fuzz_jwt['generated']:,} generated, {fuzz_jwt['passed']:,} passed"
           if fuzz_jwt else "")
    lines += [
        f"- **API fuzz** (invariant 7): schemathesis generated {fuzz['generated']:,} cases, {fuzz['passed']:,} passed "
        f"({fuzz['examples_per_operation']} examples per operation){jwt}.",
    ]

begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
text = document.read_text()
if begin not in text or end not in text:
    sys.exit(f"error: {document} has no {begin} ... {end} section")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
document.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)
print(f"figures of {run['date']} ({run['commit']}) written into {document.name}")
PY
