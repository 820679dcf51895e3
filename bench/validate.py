"""Validation throughput: records/s for validate_create on realistic records.

Validation runs for every change of every push, on the server and on each
device, so it must stay well under 100 µs for a 15-field record. Run by hand:

    .venv/bin/python bench/validate.py [--rounds 7] [--number 5000]

Prints, per form, the median over the rounds of records/s and µs per record
(and the best round: on a busy machine the median drifts with the load).
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.forms import FormRegistry, bundled_definitions  # noqa: E402

TODAY = dt.date(2025, 3, 10)

RECORDS = {
    # An ANC check-up with measurements, a danger sign and a referral: 20 fields.
    "anc_visit": {
        "pregnancy_id": "01938f3e-5b2f-7c1e-9b1a-2a6c8f3e9d10",
        "lmp_date": "2024-10-01",
        "visit_date": "2025-03-01",
        "contact_type": "anc_checkup",
        "provider": "village_midwife",
        "place": "CHS",
        "weight_kg": 52.5,
        "height_cm": 151.0,
        "bp_systolic": 118,
        "bp_diastolic": 76,
        "fundal_height_cm": 22,
        "fetal_heart_rate": 142,
        "oedema": False,
        "urine_protein": "neg",
        "haemoglobin_g_dl": 11.2,
        "tetanus_dose": "TT2",
        "ifa_tablets_given": 30,
        "danger_signs": ["fever"],
        "referred_to": "CHS",
        "counselling_topics": ["nutrition", "danger_signs", "breastfeeding"],
        "next_visit_date": "2025-04-01",
    },
    # A growth measurement of a 14-month-old (v2, with its WHO z-scores): 13 fields.
    "growth": {
        "child_id": "01938f3e-5b2f-7c1e-9b1a-2a6c8f3e9d11",
        "child_dob": "2024-01-05",
        "child_sex": "female",
        "child_dob_precision": "exact",
        "measured_on": "2025-03-05",
        "weight_kg": 9.35,
        "lenhei_cm": 76.4,
        "position": "lying",
        "muac_mm": 138,
        "oedema_bilateral": False,
        "vitamin_a_given": "none",
        "referred_to": "none",
        "counselled": True,
    },
}


def measure(form, record, number, rounds):
    """records/s of `rounds` timings of `number` validations (median, best)."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            form.validate_create(record, today=TODAY)
        rates.append(number / (time.perf_counter() - start))
    return statistics.median(rates), max(rates)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=5000)
    args = parser.parse_args(argv)
    registry = FormRegistry(bundled_definitions())
    for form_id, record in RECORDS.items():
        form = registry.latest(form_id)
        result = form.validate_create(record, today=TODAY)
        if result.errors:
            sys.exit(f"{form_id}: the example record is invalid: {result.errors}")
        median, best = measure(form, record, args.number, args.rounds)
        print(f"{form_id:<12} {len(record):>3} fields  {median:>9,.0f} records/s  "
              f"{1e6 / median:6.1f} µs/record  (median of {args.rounds}; best {1e6 / best:.1f} µs)")


if __name__ == "__main__":
    main()
