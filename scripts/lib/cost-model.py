"""What a million reservations cost on AWS, from measured units and list prices.

Run by `scripts/bench.sh cost`, which measures the inputs first:
  cost-model.py CAPACITY_JSON CONSUMERS_JSON RELAY_JSON OUT_MD OUT_PNG COMMAND MACHINE DAY

The measured inputs are DynamoDB capacity units per operation (DynamoDB Local reports them as
DynamoDB does), Kinesis record sizes, and CPU time per event. Prices are public on-demand list
prices; every figure in the output says which of the two it is.
"""

import json
import math
import sys

capacity_path, consumers_path, relay_path, out_md, out_png, command, machine, day = sys.argv[1:9]
capacity = {m["mode"]: m for m in json.load(open(capacity_path))["modes"]}
consumers = json.load(open(consumers_path))
relay_rows = [json.loads(line) for line in open(relay_path) if line.strip()]
relay = relay_rows[0]  # the usual workload

# ---------------------------------------------------------------- list prices (us-east-1)
PRICES_AS_OF = "2026-11-26"
PRICE = {
    "ddb_write_per_million": 0.625,  # on-demand write request units
    "ddb_read_per_million": 0.125,  # on-demand read request units
    "lambda_requests_per_million": 0.20,
    "lambda_gb_second_arm64": 0.0000133334,
    "kinesis_on_demand_stream_hour": 0.04,
    "kinesis_on_demand_ingest_per_gb": 0.08,  # each record rounded up to 1 KB
    "kinesis_on_demand_retrieval_per_gb": 0.04,  # per consumer (shared-throughput reads)
    "sns_fifo_publish_per_million": 0.30,  # plus $0.017/GB payload
    "sns_fifo_payload_per_gb": 0.017,
    "sqs_fifo_per_million": 0.50,  # 64 KB request chunks
    "pipes_per_million": 0.40,  # requests after filtering, 64 KB chunks
    "ddb_kinesis_cdc_per_million": 0.10,  # change data capture units, 1 KB each
}
SOURCES = [
    ("DynamoDB on-demand", "https://aws.amazon.com/dynamodb/pricing/on-demand/"),
    ("Lambda (arm64)", "https://aws.amazon.com/lambda/pricing/"),
    ("Kinesis Data Streams on-demand", "https://aws.amazon.com/kinesis/data-streams/pricing/"),
    ("SNS FIFO", "https://aws.amazon.com/sns/pricing/"),
    ("SQS FIFO", "https://aws.amazon.com/sqs/pricing/"),
    ("EventBridge Pipes", "https://aws.amazon.com/eventbridge/pricing/"),
    ("Kinesis Data Streams for DynamoDB (CDC units)", "https://aws.amazon.com/dynamodb/pricing/on-demand/"),
]

# ---------------------------------------------------------------- the workload
RESERVATIONS = 1_000_000
CANCEL_SHARE = capacity["stream"]["cancels"] / capacity["stream"]["reservations"]
CANCELS = RESERVATIONS * CANCEL_SHARE
EVENTS = RESERVATIONS + CANCELS
# A million reservations a month is 0.4 a second: Lambda's pollers find about one new record per
# read, so each relay and consumer invocation carries about one event.
EVENTS_PER_INVOCATION = 1
MEMORY_GB = 256 / 1024  # the template's MemorySize
# What an invocation waits on AWS, which the local engines do not show: assumed, not measured.
AWS_CALL_MS = {"PutRecords": 20, "DynamoDB": 6, "Publish": 20}
HOURS_PER_MONTH = 730
GB = 1024**3


def lambda_cost(invocations, ms_each):
    billed_ms = max(1, math.ceil(ms_each))
    return invocations * PRICE["lambda_requests_per_million"] / 1e6 + invocations * billed_ms / 1000 * MEMORY_GB * PRICE["lambda_gb_second_arm64"]


def ddb_cost(read_units, write_units):
    return read_units * PRICE["ddb_read_per_million"] / 1e6 + write_units * PRICE["ddb_write_per_million"] / 1e6


def per(mode, key):
    return capacity[mode][key]


record_bytes = capacity["stream"]["kinesis"]["mean_record_bytes"]
billed_kb = math.ceil(record_bytes / 1024)  # on-demand rounds each record up to 1 KB
kinesis_ingest = EVENTS * billed_kb * 1024 / GB * PRICE["kinesis_on_demand_ingest_per_gb"]
kinesis_retrieval = 2 * EVENTS * record_bytes / GB * PRICE["kinesis_on_demand_retrieval_per_gb"]  # projector + notifier
kinesis_stream_month = HOURS_PER_MONTH * PRICE["kinesis_on_demand_stream_hour"]

relay_cpu_ms = relay["kinesis"]["relay_cpu_ms_per_event"]
projector_cpu_ms = consumers["projector"]["dynamodb"]["cpu_ms_per_event"]
notifier_cpu_ms = consumers["notifier"]["dynamodb"]["cpu_ms_per_event"]
projector_units = consumers["projector"]["units_per_event"]
notifier_units = consumers["notifier"]["units_per_event"]
invocations = EVENTS / EVENTS_PER_INVOCATION

api = {
    mode: ddb_cost(
        per(mode, "per_reservation")["read"] * RESERVATIONS + per(mode, "per_cancel")["read"] * CANCELS,
        per(mode, "per_reservation")["write"] * RESERVATIONS + per(mode, "per_cancel")["write"] * CANCELS,
    )
    for mode in ("stream", "polling")
}
consumers_cost = {
    "Lambda": lambda_cost(invocations, projector_cpu_ms + AWS_CALL_MS["DynamoDB"] * projector_units["by_operation"].get("PutItem", {}).get("calls", 1))
    + lambda_cost(invocations, notifier_cpu_ms + AWS_CALL_MS["DynamoDB"] * 2 + AWS_CALL_MS["Publish"]),
    "DynamoDB": ddb_cost(EVENTS * (projector_units["read"] + notifier_units["read"]), EVENTS * (projector_units["write"] + notifier_units["write"])),
    "Kinesis": kinesis_retrieval,
    # One publish per notification; the subscriber receives and deletes it, one message a request.
    "SNS + SQS": EVENTS * (PRICE["sns_fifo_publish_per_million"] + 2 * PRICE["sqs_fifo_per_million"]) / 1e6
    + EVENTS * record_bytes / GB * PRICE["sns_fifo_payload_per_gb"],
}

poll = per("polling", "per_relayed_event")
idle = capacity["polling"].get("idle", {})


# DynamoDB Local reports 0 units for a Query that finds nothing; DynamoDB bills every Query at
# least 0.5 read request units (an index read is eventually consistent, rounded up to 4 KB).
MIN_QUERY_READ_UNITS = 0.5


def polling(interval_ms):
    idle_here = idle[str(interval_ms)]
    queries_per_minute = idle_here["by_operation"].get("Query", {}).get("calls", 0) * 60 / idle_here["seconds"]
    reads_per_minute = max(idle_here["read_units_per_minute"], queries_per_minute * MIN_QUERY_READ_UNITS)
    writes_per_minute = idle_here["write_units_per_minute"]
    minutes = HOURS_PER_MONTH * 60
    return {
        # The poller runs the whole month: one invocation a minute, each polling for the minute.
        "Lambda": lambda_cost(minutes, 60_000),
        "DynamoDB": ddb_cost(EVENTS * poll["read"] + minutes * reads_per_minute, EVENTS * poll["write"] + minutes * writes_per_minute),
        "Kinesis": kinesis_ingest,
        "idle_per_month": lambda_cost(minutes, 60_000) + ddb_cost(minutes * reads_per_minute, minutes * writes_per_minute),
        "queries_per_minute": queries_per_minute,
    }


scenarios = {
    "Stream relay (this product)": {
        "DynamoDB": api["stream"],
        "Lambda": lambda_cost(invocations, relay_cpu_ms * EVENTS_PER_INVOCATION + AWS_CALL_MS["PutRecords"]),
        "Kinesis": kinesis_ingest,
    },
    "Polling publisher, 1 s": {**polling(1000), "DynamoDB": api["polling"] + polling(1000)["DynamoDB"]},
    "Polling publisher, 100 ms": {**polling(100), "DynamoDB": api["polling"] + polling(100)["DynamoDB"]},
    "EventBridge Pipes as the relay": {
        "DynamoDB": api["stream"],
        "Pipes": EVENTS * PRICE["pipes_per_million"] / 1e6,
        "Kinesis": kinesis_ingest,
    },
    "Kinesis Data Streams for DynamoDB": {
        "DynamoDB": api["stream"]
        # every outbox change is captured: the insert, and the TTL removal later
        + 2 * EVENTS * math.ceil(record_bytes * 1.4 / 1024) * PRICE["ddb_kinesis_cdc_per_million"] / 1e6,
        # the change records carry both images in DynamoDB JSON: about twice the envelope
        "Kinesis": 2 * EVENTS * math.ceil(record_bytes * 2.5 / 1024) * 1024 / GB * PRICE["kinesis_on_demand_ingest_per_gb"],
    },
}
for parts in scenarios.values():
    parts["Consumers"] = sum(consumers_cost.values())

columns = ["DynamoDB", "Lambda", "Kinesis", "Pipes", "Consumers"]
idle_1s, idle_100 = polling(1000)["idle_per_month"], polling(100)["idle_per_month"]

lines = [
    "# What a million reservations cost",
    "",
    f"Generated by `{command}` on {day} ({machine}). Do not edit by hand: run the command again.",
    "",
    f"**Workload**: {RESERVATIONS:,} reservations a month, {CANCEL_SHARE:.0%} of them cancelled later: "
    f"{EVENTS:,.0f} events. That is about {RESERVATIONS / (HOURS_PER_MONTH * 3600):.1f} reservations a second, so each "
    f"relay and consumer invocation is taken to carry {EVENTS_PER_INVOCATION} event (Lambda reads a stream "
    "several times a second; batches fill only under heavier traffic, which makes Lambda cheaper per event).",
    "",
    "## Measured here",
    "",
    "DynamoDB Local reports the capacity each call consumes as DynamoDB does; every call the product makes",
    "asked for it (`ReturnConsumedCapacity=TOTAL`, set by an SDK interceptor in the benchmarks).",
    "",
    "| what | stream mode | polling mode |",
    "|---|---|---|",
]
for label, key in [("per reservation (API)", "per_reservation"), ("per cancel (API)", "per_cancel"), ("per relayed event (relay or poller)", "per_relayed_event")]:
    s, p = per("stream", key), per("polling", key)
    lines.append(f"| {label} | {s['read']:.2f} RRU, {s['write']:.2f} WRU | {p['read']:.2f} RRU, {p['write']:.2f} WRU |")
lines += [
    f"| per applied event, projector | {projector_units['read']:.2f} RRU, {projector_units['write']:.2f} WRU | same |",
    f"| per applied event, notifier | {notifier_units['read']:.2f} RRU, {notifier_units['write']:.2f} WRU | same |",
    f"| Kinesis record (envelope + key) | {record_bytes:.0f} bytes: {capacity['stream']['kinesis']['put_payload_units_per_event']:.0f} PUT payload unit, {billed_kb} KB billed on-demand | same |",
    f"| relay CPU per event (SDK included, against kinesis-mock) | {relay_cpu_ms:.4f} ms | — |",
    f"| projector / notifier CPU per event (SDK included, against DynamoDB Local) | {projector_cpu_ms:.3f} / {notifier_cpu_ms:.3f} ms | same |",
    "",
    "The stream relay makes no DynamoDB call at all: Lambda reads the table's stream for it, and reads",
    "by Lambda triggers are not billed. The API's transaction costs more in polling mode because the",
    "outbox item also goes into the unpublished-events index, and the poller clears that mark after",
    "publishing (docs/adr/0004-polling-publisher.md).",
    "",
    "## The bill",
    "",
    f"US dollars per million reservations. Prices: on-demand list prices of us-east-1 as written down on",
    f"{PRICES_AS_OF} (table below); check them before budgeting. Lambda durations are the measured CPU time",
    f"plus an **assumed** wait on AWS per call ({AWS_CALL_MS['PutRecords']} ms for PutRecords, {AWS_CALL_MS['DynamoDB']} ms for a DynamoDB",
    f"call, {AWS_CALL_MS['Publish']} ms for an SNS publish), rounded up to the billed millisecond, at {int(MEMORY_GB * 1024)} MB arm64.",
    "",
    "| relay | " + " | ".join(columns) + " | total | order per reservation |",
    "|---|" + "---|" * (len(columns) + 2),
]
order = {
    "Stream relay (this product)": "yes, also under partial PutRecords failure (ADR 0002)",
    "Polling publisher, 1 s": "yes (ADR 0004)",
    "Polling publisher, 100 ms": "yes (ADR 0004)",
    "EventBridge Pipes as the relay": "not shown: the relay's rule under partial failure is not Pipes'",
    "Kinesis Data Streams for DynamoDB": "no: records may arrive out of order and twice",
}
totals = {}
for name, parts in scenarios.items():
    parts.pop("idle_per_month", None)
    parts.pop("queries_per_minute", None)
    total = sum(parts.get(c, 0.0) for c in columns)
    totals[name] = total
    cells = " | ".join(f"{parts[c]:.2f}" if c in parts else "—" for c in columns)
    lines.append(f"| {name} | {cells} | **{total:.2f}** | {order[name]} |")
lines += [
    "",
    "The polling rows include the poller's month (its Lambda running every minute and its queries",
    "while idle), which it pays whatever the traffic; see the fixed costs below.",
    "",
    "Consumers (the same in every row): "
    + ", ".join(f"{k} {v:.2f}" for k, v in consumers_cost.items())
    + ". SNS + SQS is the notifier's FIFO topic and its subscriber queue (one publish; the subscriber's receive and delete, one message a request).",
    "",
    "**Fixed per month, whatever the volume**: the on-demand Kinesis stream, "
    f"${kinesis_stream_month:.2f} ({HOURS_PER_MONTH} stream-hours), in every row. The polling publisher is never idle: at "
    f"1 s it costs ${idle_1s:.2f} a month with no traffic at all, at 100 ms ${idle_100:.2f}: the poller's Lambda "
    f"running every minute for the whole minute, {polling(1000)['queries_per_minute']:.0f} or {polling(100)['queries_per_minute']:.0f} queries a minute on the index (counted here; "
    f"billed at DynamoDB's minimum of {MIN_QUERY_READ_UNITS} RRU each, since DynamoDB Local reports 0 for an empty query) "
    "and its lease renewals (measured). The stream relay costs nothing while idle.",
    "",
    "Not in the rows: storage (the outbox items live 7 days), CloudWatch logs and alarms, API Gateway",
    "(the same for every relay), data transfer. EventBridge Pipes cannot write the envelope by itself (the",
    "new image is DynamoDB JSON): it would need an enrichment Lambda, billed on top. Kinesis Data Streams",
    "for DynamoDB publishes every change of the table, the TTL removals included, as DynamoDB JSON with",
    "both images: consumers would have to filter and decode them, and lose the order per reservation.",
    "",
    "![Cost per million reservations by relay](cost.png)",
    "",
    "## Prices used",
    "",
    "| price | US dollars |",
    "|---|---|",
]
for key, value in PRICE.items():
    lines.append(f"| {key.replace('_', ' ')} | {value} |")
lines += ["", "Sources (list prices, us-east-1):", ""]
lines += [f"- {name}: {url}" for name, url in SOURCES]
open(out_md, "w").write("\n".join(lines) + "\n")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
names = list(scenarios)
bottom = [0.0] * len(names)
for column in columns:
    values = [scenarios[n].get(column, 0.0) for n in names]
    ax.barh(names, values, left=bottom, label=column)
    bottom = [b + v for b, v in zip(bottom, values)]
ax.invert_yaxis()
ax.set_xlabel("US dollars per million reservations (measured units × list prices)")
ax.set_title(f"Cost per million reservations, {CANCEL_SHARE:.0%} cancelled")
ax.legend(loc="lower right")
ax.grid(True, axis="x", alpha=0.3)
fig.tight_layout()
fig.savefig(out_png)
