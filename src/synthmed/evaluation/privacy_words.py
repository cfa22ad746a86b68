"""The privacy audit in words: its one-line reason and the sentences a data-protection officer reads.

Shared by ``privacy.json`` (reason), the log of ``evaluate privacy``, the report and the release card.
"""

from __future__ import annotations

from typing import Any

TEST_NAMES = {"membership": "membership inference (distance to the closest synthetic image, in pixels)",
              "copies/features": "copies in the classifier's features", "copies/pixels": "copies in pixels"}


def percent(x: float) -> str:
    return f"{100 * x:.2f} %"


def _interval(test: dict[str, Any], confidence: float, show=lambda x: f"{x:.3f}") -> str:
    low, high = test["interval"]
    return f"{100 * confidence:g} % CI {show(low)}-{show(high)}"


def effect_words(name: str, test: dict[str, Any], confidence: float) -> str:
    """A test's effect with its interval: the AUC, or the copies with their share and chance's share."""
    if name == "membership":
        return f"AUC {test['auc']:.3f} ({_interval(test, confidence)})"
    return (f"{test['count']} of {test['n_synthetic']} synthetic images ({percent(test['rate'])}, "
            f"{_interval(test, confidence, percent)}; chance {percent(test['chance_rate'])})")


def _closer_than(test: dict[str, Any]) -> str:
    if test["k"] == 1:
        return f"any of the {test['n_holdout']}"
    return f"all but the {test['k'] - 1} closest of the {test['n_holdout']}"


def reason(report: dict[str, Any]) -> str:
    """One sentence: the verdict, the test that decided it, its effect against the threshold and its p-value."""
    name = report["decided_by"]
    test, alpha = report["tests"][name], report["options"]["alpha"]
    effect = effect_words(name, test, report["confidence"])
    limit = (f"threshold AUC {test['effect_threshold']:g}" if name == "membership"
             else f"threshold of {percent(test['effect_threshold'])} above chance")
    p = f"Holm-adjusted p = {test['p_adjusted']:.2g}"
    if report["verdict"] == "fail":
        return f"fail: {TEST_NAMES[name]}: {effect}, at or above the {limit}; {p} <= {alpha:g}"
    if report["verdict"] == "warn":
        return f"warn: {TEST_NAMES[name]}: {effect}, significant ({p} <= {alpha:g}) but below the {limit}"
    return f"pass: no test is significant at the {alpha:g} false-alarm level (closest: {TEST_NAMES[name]}, {p})"


def describe(report: dict[str, Any]) -> list[str]:
    """The whole audit in sentences for a reader who is not a statistician (a data-protection officer)."""
    o, tests, confidence = report["options"], report["tests"], report["confidence"]
    m, d = tests["membership"], report["density_attack"]
    lines = [
        f"Verdict: {report['reason']}.",
        f"Membership inference: an attacker who ranks real patients by the distance (in pixels) of their "
        f"images to the closest synthetic image tells {m['n_members']} training patients from "
        f"{m['n_nonmembers']} patients the generator never saw with {effect_words('membership', m, confidence)}, "
        f"where 0.5 is guessing and 1 always right; one-sided p = {m['p_value']:.2g}.",
    ]
    for name, test in tests.items():
        if name.startswith("copies/"):
            beside = "" if test["in_verdict"] else (
                " Beside the verdict, not part of it: images unlike any real one can gather near one training "
                "image in this space without copying it; look at the closest pairs before acting on it.")
            lines.append(f"Copies in {report['spaces'][test['space']]}: {effect_words(name, test, confidence)} are "
                         f"closer to a training image than {_closer_than(test)} patients the generator never saw "
                         f"(one image each); p = {test['p_value']:.2g}.{beside}")
    lines += [
        f"Density attack (DOMIAS-style, beside the verdict, not part of it): AUC {d['auc']:.3f} "
        f"({_interval(d, confidence)}), p = {d['p_value']:.2g}, {d['n_members']} training against "
        f"{d['n_nonmembers']} unseen patients, with {d['n_reference']} other unseen patients as the reference.",
        f"How the verdict is reached: 'fail' when a test is significant after Holm's correction over its "
        f"{sum(t['in_verdict'] for t in tests.values())} tests in the verdict at the {o['alpha']:g} level (the "
        "chance that a generator which leaks nothing is flagged) and its effect reaches the threshold (membership "
        f"AUC {o['mia_auc_threshold']:g}; copies {percent(o['copy_excess_threshold'])} above chance); 'warn' when "
        "a test is significant below the threshold. This is an empirical audit of these images against these "
        "attacks, not a proof of privacy: it gives no differential-privacy guarantee and cannot see leaks that "
        "these attacks miss.",
    ]
    return lines
