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
    # Amazon MSK and Lambda's Kafka pollers (EventBus=Kafka), written down on 2026-12-03.
    "msk_serverless_cluster_hour": 0.75,
    "msk_serverless_partition_hour": 0.0015,
    "msk_serverless_in_per_gb": 0.10,
    "msk_serverless_out_per_gb": 0.05,
    "msk_t3_small_broker_hour": 0.0456,
    "msk_m7g_large_broker_hour": 0.204,
    "msk_storage_gb_month": 0.10,
    "lambda_kafka_event_poller_unit_hour": 0.185,  # provisioned mode, per EPU; grouped ESMs share EPUs
    "privatelink_endpoint_az_hour": 0.01,  # the SQS endpoint in the cluster's VPC, per AZ
}
KAFKA_PRICES_NOTE = (
    "The MSK and PrivateLink prices could not be read from AWS's pages on this machine (no access); they are "
    "the list prices as known on 2026-12-03 and agree with independent write-ups. The Event Poller Unit price "
    "is AWS's own example in the Lambda guide (Kafka provisioned mode). Check all of them before budgeting."
)
SOURCES = [
    ("DynamoDB on-demand", "https://aws.amazon.com/dynamodb/pricing/on-demand/"),
    ("Lambda (arm64)", "https://aws.amazon.com/lambda/pricing/"),
    ("Kinesis Data Streams on-demand", "https://aws.amazon.com/kinesis/data-streams/pricing/"),
    ("SNS FIFO", "https://aws.amazon.com/sns/pricing/"),
    ("SQS FIFO", "https://aws.amazon.com/sqs/pricing/"),
    ("EventBridge Pipes", "https://aws.amazon.com/eventbridge/pricing/"),
    ("Kinesis Data Streams for DynamoDB (CDC units)", "https://aws.amazon.com/dynamodb/pricing/on-demand/"),
    ("Amazon MSK (Serverless and provisioned brokers)", "https://aws.amazon.com/msk/pricing/"),
    ("Lambda Kafka provisioned mode (Event Poller Units)", "https://docs.aws.amazon.com/lambda/latest/dg/kafka-scaling-modes.html"),
    ("PrivateLink interface endpoints", "https://aws.amazon.com/privatelink/pricing/"),
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
AWS_CALL_MS = {"PutRecords": 20, "Produce": 10, "DynamoDB": 6, "Publish": 20}
# The consumers' calls, as consumer-bench counts them (`service.Operation`): what each waits on AWS,
# and what it costs beyond the Lambda and DynamoDB's units (priced from the measured capacity).
CONSUMER_CALL_WAIT_MS = {"dynamodb": AWS_CALL_MS["DynamoDB"], "sns.Publish": AWS_CALL_MS["Publish"]}
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
measured_consumers = {c["name"]: c for c in consumers["consumers"]}  # every consumer, in the list's order
CONSUMER_COUNT = len(measured_consumers)
kinesis_retrieval = CONSUMER_COUNT * EVENTS * record_bytes / GB * PRICE["kinesis_on_demand_retrieval_per_gb"]  # each reads the stream
kinesis_stream_month = HOURS_PER_MONTH * PRICE["kinesis_on_demand_stream_hour"]

relay_cpu_ms = relay["kinesis"]["relay_cpu_ms_per_event"]
# On Kafka, measured the same way against the local broker when the run had one.
relay_kafka_cpu_ms = (relay.get("kafka") or {}).get("relay_cpu_ms_per_event", relay_cpu_ms)
# A Kafka record carries the envelope and key, plus the headers event_type, event_id and trace_id
# (names and values: about 102 bytes).
kafka_record_bytes = record_bytes + 102
KAFKA_PARTITIONS = 4
kafka_in = EVENTS * kafka_record_bytes / GB
kafka_out = CONSUMER_COUNT * kafka_in  # each consumer reads the topic
invocations = EVENTS / EVENTS_PER_INVOCATION


def consumer_call(call, key):
    """What a consumer's call waits on AWS, or costs besides: refused loudly when not written down,
    so that a new consumer's calls are never priced at nothing."""
    table = CONSUMER_CALL_WAIT_MS if key == "wait" else CONSUMER_CALL_PRICE
    for name in (call, call.split(".")[0]):
        if name in table:
            return table[name]
    sys.exit(f"cost-model.py: no {'assumed wait' if key == 'wait' else 'price'} for the consumers' call {call}; add it to {'CONSUMER_CALL_WAIT_MS' if key == 'wait' else 'CONSUMER_CALL_PRICE'}")


# Per call, beyond DynamoDB's units: a publish to the notifications FIFO topic is delivered to its
# subscriber queue, where it is received and deleted (one message a request).
CONSUMER_CALL_PRICE = {
    "dynamodb": ("DynamoDB", 0.0),  # its units are priced from the measured capacity
    "sns.Publish": (
        "SNS + SQS",
        (PRICE["sns_fifo_publish_per_million"] + 2 * PRICE["sqs_fifo_per_million"]) / 1e6
        + record_bytes / GB * PRICE["sns_fifo_payload_per_gb"],
    ),
}

api = {
    mode: ddb_cost(
        per(mode, "per_reservation")["read"] * RESERVATIONS + per(mode, "per_cancel")["read"] * CANCELS,
        per(mode, "per_reservation")["write"] * RESERVATIONS + per(mode, "per_cancel")["write"] * CANCELS,
    )
    for mode in ("stream", "polling")
}
consumers_cost = {"Lambda": 0.0, "DynamoDB": 0.0, "Kinesis": kinesis_retrieval}
for measured in measured_consumers.values():
    calls = measured["calls_per_event"]
    wait_ms = sum(n * consumer_call(call, "wait") for call, n in calls.items())
    consumers_cost["Lambda"] += lambda_cost(invocations, (measured["dynamodb"]["cpu_ms_per_event"] + wait_ms) * EVENTS_PER_INVOCATION)
    units = measured["units_per_event"]
    consumers_cost["DynamoDB"] += ddb_cost(EVENTS * units["read"], EVENTS * units["write"])
    for call, n in calls.items():
        label, price = consumer_call(call, "price")
        if price:
            consumers_cost[label] = consumers_cost.get(label, 0.0) + EVENTS * n * price

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
    "Stream relay on MSK Serverless": {
        "DynamoDB": api["stream"],
        "Lambda": lambda_cost(invocations, relay_kafka_cpu_ms * EVENTS_PER_INVOCATION + AWS_CALL_MS["Produce"]),
        "Kafka": kafka_in * PRICE["msk_serverless_in_per_gb"] + kafka_out * PRICE["msk_serverless_out_per_gb"],
    },
    "Stream relay on MSK provisioned": {
        "DynamoDB": api["stream"],
        "Lambda": lambda_cost(invocations, relay_kafka_cpu_ms * EVENTS_PER_INVOCATION + AWS_CALL_MS["Produce"]),
        # Brokers are paid by the hour (fixed, below); the data itself costs nothing more.
        "Kafka": 0.0,
    },
    "Kinesis Data Streams for DynamoDB": {
        "DynamoDB": api["stream"]
        # every outbox change is captured: the insert, and the TTL removal later
        + 2 * EVENTS * math.ceil(record_bytes * 1.4 / 1024) * PRICE["ddb_kinesis_cdc_per_million"] / 1e6,
        # the change records carry both images in DynamoDB JSON: about twice the envelope
        "Kinesis": 2 * EVENTS * math.ceil(record_bytes * 2.5 / 1024) * 1024 / GB * PRICE["kinesis_on_demand_ingest_per_gb"],
    },
}
# On Kafka the consumers read the topic (its data out is in the Kafka column), not the stream.
consumers_on_kafka = sum(v for k, v in consumers_cost.items() if k != "Kinesis")
for name, parts in scenarios.items():
    parts["Consumers"] = consumers_on_kafka if "MSK" in name else sum(consumers_cost.values())

columns = ["DynamoDB", "Lambda", "Kinesis", "Kafka", "Pipes", "Consumers"]
kafka_fixed = {
    "serverless": HOURS_PER_MONTH * (PRICE["msk_serverless_cluster_hour"] + KAFKA_PARTITIONS * PRICE["msk_serverless_partition_hour"]),
    "t3_small": HOURS_PER_MONTH * 3 * PRICE["msk_t3_small_broker_hour"] + 3 * 10 * PRICE["msk_storage_gb_month"],
    "m7g_large": HOURS_PER_MONTH * 3 * PRICE["msk_m7g_large_broker_hour"] + 3 * 10 * PRICE["msk_storage_gb_month"],
    "pollers": HOURS_PER_MONTH * PRICE["lambda_kafka_event_poller_unit_hour"],
    "endpoint": HOURS_PER_MONTH * 2 * PRICE["privatelink_endpoint_az_hour"],
}
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
    f"| per applied event, {name} | {m['units_per_event']['read']:.2f} RRU, {m['units_per_event']['write']:.2f} WRU | same |"
    for name, m in measured_consumers.items()
]
lines += [
    f"| Kinesis record (envelope + key) | {record_bytes:.0f} bytes: {capacity['stream']['kinesis']['put_payload_units_per_event']:.0f} PUT payload unit, {billed_kb} KB billed on-demand | same |",
    f"| relay CPU per event (SDK included, against kinesis-mock) | {relay_cpu_ms:.4f} ms | — |",
    f"| {' / '.join(measured_consumers)} CPU per event (SDK included, on the local stack) | "
    + " / ".join(f"{m['dynamodb']['cpu_ms_per_event']:.3f}" for m in measured_consumers.values())
    + " ms | same |",
    "| the consumers' AWS calls per event | "
    + "; ".join(f"{name}: " + ", ".join(f"{call} {n:.2f}" for call, n in sorted(m["calls_per_event"].items())) for name, m in measured_consumers.items())
    + " | same |",
    "",
    "The stream relay makes no DynamoDB call at all: Lambda reads the table's stream for it, and reads",
    "by Lambda triggers are not billed. The API's transaction costs more in polling mode because the",
    "outbox item also goes into the unpublished-events index, and the poller clears that mark after",
    "publishing (docs/adr/0004-polling-publisher.md).",
    "",
    f"The CPU per event is this run's own (the consumers: {consumers['events']:,} events, {consumers['dynamodb_passes']} "
    f"pass{'es' if consumers['dynamodb_passes'] != 1 else ''} on the local stack, every consumer the product registers), on the machine named above.",
    "docs/benchmarks.md measures the relay and the consumers in longer runs (\"Relay\", \"Consumers\"),",
    "each section with its own date and machine; figures of different runs differ as much as the",
    "machine's speed does from day to day, so compare figures of one run.",
    "",
    "## The bill",
    "",
    f"US dollars per million reservations. Prices: on-demand list prices of us-east-1 as written down on",
    f"{PRICES_AS_OF} (table below); check them before budgeting. Lambda durations are the measured CPU time",
    f"plus an **assumed** wait on AWS per call ({AWS_CALL_MS['PutRecords']} ms for PutRecords, {AWS_CALL_MS['DynamoDB']} ms for a DynamoDB",
    f"call, {AWS_CALL_MS['Publish']} ms for an SNS publish), rounded up to the billed millisecond, at {int(MEMORY_GB * 1024)} MB arm64;",
    "the consumers' calls are the ones counted per event in this run.",
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
    "Stream relay on MSK Serverless": "yes, the same rule on Kafka (ADR 0007)",
    "Stream relay on MSK provisioned": "yes, the same rule on Kafka (ADR 0007)",
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
    "Consumers (the same in every row; on Kafka without the Kinesis reads, whose data out is in the Kafka column): "
    + ", ".join(f"{k} {v:.2f}" for k, v in consumers_cost.items())
    + ". SNS + SQS is the notifier's FIFO topic and its subscriber queue (each counted publish; the subscriber's receive and delete, one message a request).",
    "",
    "**Fixed per month, whatever the volume**: the on-demand Kinesis stream, "
    f"${kinesis_stream_month:.2f} ({HOURS_PER_MONTH} stream-hours), in every row but the MSK ones. The polling publisher is never idle: at "
    f"1 s it costs ${idle_1s:.2f} a month with no traffic at all, at 100 ms ${idle_100:.2f}: the poller's Lambda "
    f"running every minute for the whole minute, {polling(1000)['queries_per_minute']:.0f} or {polling(100)['queries_per_minute']:.0f} queries a minute on the index (counted here; "
    f"billed at DynamoDB's minimum of {MIN_QUERY_READ_UNITS} RRU each, since DynamoDB Local reports 0 for an empty query) "
    "and its lease renewals (measured). The stream relay costs nothing while idle.",
    "",
    "**On Kafka (`EventBus=Kafka`), fixed per month** instead of the stream: an MSK Serverless cluster "
    f"${kafka_fixed['serverless']:.2f} (the cluster-hours and {KAFKA_PARTITIONS} partitions), or a small provisioned "
    f"cluster of 3 kafka.t3.small brokers with 10 GB each ${kafka_fixed['t3_small']:.2f} (3 kafka.m7g.large for production: "
    f"${kafka_fixed['m7g_large']:.2f}); in both cases the consumers' MSK mappings in provisioned mode (the error-handling "
    f"controls need it), one Event Poller Unit shared by the {CONSUMER_COUNT} (their poller group), ${kafka_fixed['pollers']:.2f}; and the SQS "
    f"interface endpoint their on-failure destination needs in the cluster's VPC, two AZs, ${kafka_fixed['endpoint']:.2f} "
    "(a NAT gateway, if the relay's subnets use one instead of endpoints, costs more). Most Kafka users bring a cluster "
    "they already pay for: then only the pollers and the endpoint are this product's. The Kafka rows' data: "
    f"{kafka_record_bytes:.0f} bytes a record (the Kinesis record and the headers), written once and read by {CONSUMER_COUNT} consumers; "
    f"relay CPU {relay_kafka_cpu_ms:.4f} ms per event against the local broker, plus an **assumed** {AWS_CALL_MS['Produce']} ms "
    "for a produce.",
    "",
    KAFKA_PRICES_NOTE,
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
