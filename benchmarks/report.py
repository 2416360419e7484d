"""Renders benchmarks/results.json as BENCHMARKS.md (no measuring here: figures come only from results.json)."""

from __future__ import annotations

import os

HEADER = """# Benchmarks

Every CPU figure below is produced by `make bench` or `make bench-studies` (`benchmarks/run_all.py`, whose
docstring names each section's command), which write `benchmarks/results.json` and regenerate this file; CPU wall
times come from a 2-core machine. GPU
figures come from `benchmarks/run_gpu.py` on the card named in each section's title, merged from
the raw records in `benchmarks/gpu_runs/`. Assertions in the test suite use model-call counts and
accuracies, never wall time.
"""


def _machine(m: dict) -> str:
    dev = m.get("gpu") or f"CPU ({m.get('cpus')} cores, {m.get('cpu_threads')} torch threads)"
    return f"{dev}; {m.get('platform')}; torch {m.get('torch')}"


def _bound(probe: dict, r: dict) -> str:
    """The bare UNet's own t(b)/t(2b): the least DICE/CFG can be at this batch on this card."""
    one = probe.get(f"{r['family']}_{r['res']}px_batch{r['batch']}")
    two = probe.get(f"{r['family']}_{r['res']}px_batch{2 * r['batch']}")
    return f"{one['gpu_ms'] / two['gpu_ms']:.3f}" if one and two else "-"


def _sampling(runs: dict, probe: dict | None = None) -> list[str]:
    head = ("| run | cfg=w wall (s) | DICE cfg=1 wall incl. refiner (s) | DICE/CFG | refiner overhead (of cfg=1 sampling) | "
            "model calls cfg / DICE | rows through the UNet cfg / DICE |")
    rule = "|---|---|---|---|---|---|---|"
    if probe:
        head, rule = head + " bare-UNet limit t(b)/t(2b) |", rule + "---|"
    out = [head, rule]
    for name, r in sorted(runs.items(), key=lambda kv: (kv[1]["family"] != "sd15", kv[1]["res"], kv[1]["batch"])):
        c, d = r["model_calls"]["cfg"], r["model_calls"]["dice"]
        row = (f"| {name} ({r['steps']} steps, {r['dtype']}) | {r['cfg_s']:.3f} | {r['dice_total_s']:.3f} | "
               f"**{r['ratio_dice_over_cfg']:.3f}** | {100 * r['refiner_overhead_fraction']:.3f}% | {c['calls']} / {d['calls']} | "
               f"{c['rows']} / {d['rows']} |")
        out.append(row + (f" {_bound(probe, r)} |" if probe else ""))
    return out


def _probe(probe: dict) -> list[str]:
    out = ["| model | batch | one UNet forward (ms, CUDA events) | t(b)/t(2b) |", "|---|---|---|---|"]
    for r in sorted(probe.values(), key=lambda r: (r["family"] != "sd15", r["batch"])):
        out.append(f"| {r['family']} {r['res']} px {r['dtype']} | {r['batch']} | {r['gpu_ms']:.1f} | {_bound(probe, r)} |")
    return out


def _training_grid(runs: dict) -> list[str]:
    names = sorted(runs)
    latest, earlier = names[-1], names[:-1]
    by = {n: {(r["family"], r["batch"], r["grad_ckpt"], r["mode"]): r for r in runs[n]} for n in names}
    out = [f"Node loop against the hand-written loop, both in one process per model; `{latest}` is the main run"
           + (f", the ratio in brackets is from `{', '.join(earlier)}`." if earlier else "."), "",
           "| model | batch | grad. ckpt | node s/step | reference s/step | node/ref | steps/s (node) | peak VRAM node / ref (GB) |",
           "|---|---|---|---|---|---|---|---|"]
    ratios = []
    for key in sorted(k for k in by[latest] if k[3] == "node"):
        node, ref = by[latest][key], by[latest].get((*key[:3], "reference"))
        if not ref or node.get("oom") or ref.get("oom"):
            out.append(f"| {key[0]} {node['res']} px | {key[1]} | {'on' if key[2] else 'off'} | out of memory | | | | |")
            continue
        ratio = node["s_per_step"] / ref["s_per_step"]
        ratios.append(ratio)
        older = []
        for n in earlier:
            o, oref = by[n].get(key), by[n].get((*key[:3], "reference"))
            if o and oref and not o.get("oom") and not oref.get("oom"):
                older.append(o["s_per_step"] / oref["s_per_step"])
                ratios.append(older[-1])
        older_txt = f" ({', '.join(f'{x:.2f}' for x in older)})" if older else ""
        out.append(f"| {key[0]} {node['res']} px {node['dtype']} | {key[1]} | {'on' if key[2] else 'off'} | "
                   f"{node['s_per_step']:.3f} | {ref['s_per_step']:.3f} | **{ratio:.2f}**{older_txt} | {1 / node['s_per_step']:.1f} | "
                   f"{node['peak_vram_mb'] / 1024:.1f} / {ref['peak_vram_mb'] / 1024:.1f} |")
    if ratios:
        import math

        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        out += ["", f"Geometric mean of node/reference over all {len(ratios)} pairs: **{geo:.3f}** "
                f"(range {min(ratios):.2f} to {max(ratios):.2f})."]
    return out


def _precision(checks: dict) -> list[str]:
    out = ["| model | precision | loss scaling | held-out loss unrefined -> refined | ratio | student vs teacher at alpha=0 "
           "(max rel. diff) | train time (s) |", "|---|---|---|---|---|---|---|"]
    for r in checks.values():
        out.append(f"| tiny {r['family']} | {r['precision']} | {'yes' if r['grad_scaling'] else 'no'} | "
                   f"{r['held_out_unrefined']:.4f} -> {r['held_out_refined']:.4f} | **{r['held_out_ratio']:.3f}** | "
                   f"{r['student_vs_teacher_rel_max_diff']:.1e} | {r['train_s']:.1f} |")
    return out


def _training(t: dict) -> list[str]:
    n, r = t["node"], t["reference"]
    return [
        f"Full-size SD1.5 UNet (random weights), {n['res']} px, batch {n['batch']}, {n['steps_timed']} timed steps after warm-up.",
        "",
        "| loop | s/step | peak RSS (MB) | RSS before the loop (MB) |", "|---|---|---|---|",
        f"| DICE Train Refiner's loop (calc_cond_batch, ComfyUI machinery) | {n['s_per_step']:.3f} | {n['peak_rss_mb']:.0f} | "
        f"{n['rss_before_loop_mb']:.0f} |",
        f"| minimal hand-written PyTorch loop (direct UNet call) | {r['s_per_step']:.3f} | {r['peak_rss_mb']:.0f} | "
        f"{r['rss_before_loop_mb']:.0f} |",
        "",
        f"Step-time ratio node/reference: **{t['step_ratio_node_over_reference']:.3f}** (goal <= 1.10); "
        f"peak-memory ratio: **{t['peak_rss_ratio']:.3f}**.",
    ] + ([
        "",
        "Step times: both loops in one process, alternating node, reference, node, reference; the faster run of each is "
        "compared. Peak RSS: each loop alone in a fresh process. All runs (s/step): "
        + "; ".join(f"{mode} {', '.join(f'{x:.3f}' for x in xs)}" for mode, xs in t["all_s_per_step"].items()) + ".",
    ] if "all_s_per_step" in t else [])


def _cost(points: list[dict]) -> list[str]:
    out = ["| batch | resolution | prompt tokens | s/step | peak RSS (MB) |", "|---|---|---|---|---|"]
    for p in points:
        out.append(f"| {p['batch']} | {p['res']} | {p['tokens']} | {p['s_per_step']:.3f} | {p['peak_rss_mb']:.0f} |")
    return out


def _padding(study: dict) -> list[str]:
    def cell(split: str, key: str) -> str:
        figure = study[split][key]
        low, high = figure["ci95"]
        return f"{figure['mean']:.3f} [{low:.3f}, {high:.3f}]"

    lines = [f"Measured {study.get('date', '?')} on {_machine(study.get('machine', {}))}, ComfyUI {study.get('comfyui', '?')}. "
             f"{study['family']}, {study['models']} models, {study['steps']} training steps; loss over the unrefined "
             "prompt's (below 1: the refiner helps), mean over (model, prompt) pairs with a bootstrap 95% interval. "
             f"Chosen on validation ({study['validation']['pairs']} pairs): **{study['chosen_on_validation']}**; "
             f"test: {study['test']['pairs']} pairs.", "",
             "| student sees | validation | test |", "|---|---|---|"]
    for label, key in (("padded to 120, refined", "pad 120_over_unrefined"), ("own tokens, refined", "no padding_over_unrefined"),
                       ("padded to 120, strength 0", "pad_only_over_unrefined"),
                       ("difference: padded minus own, refined", "pad_minus_no_padding")):
        lines.append(f"| {label} | {cell('validation', key)} | {cell('test', key)} |")
    return lines


def _dial_candidate(key) -> str:
    """A dial candidate's name, "steps:low-high:samples[:edges]" (in results from before ranges were compared, steps
    alone)."""
    parts = str(key).split(":")
    steps, span, samples, *stages = parts if len(parts) >= 3 else (parts[0], "2-10", "8")
    staged = f", timestep stages at {', '.join(stages[0].split('/'))}" if stages else ""
    return f"{steps} steps, range {span.replace('-', ' to ')}, {samples} teacher samples per prompt{staged}"


def _dial(dial: dict, section: dict) -> list[str]:
    pairs = dial["pairs"]

    def cell(arm: dict) -> str:
        low, high = arm["recovery_ci95"]
        return (f"{arm['strength']:.3g} | {arm['accuracy']:.3f} | **{arm['recovery']:.2f}** [{low:.2f}, {high:.2f}] | "
                f"{arm['distance_over_cfg1']:.2f}")

    has_dial = "dial" in dial["rows"][0]
    dial_text = ""
    if has_dial:
        candidates = dial["dial_validation"]["candidates"]
        dial_text = (f" *dial* is a dial refiner (guidance range {dial['dial_range'][0]:g} to {dial['dial_range'][1]:g}, "
                     f"default {dial['w_train']:g}, otherwise the same settings but as chosen below) refined at guidance_scale = w and strength 1; "
                     "its steps, range and teacher samples were chosen on the validation seeds by the worst recovery over the four w ("
                     + "; ".join(f"{_dial_candidate(k)}: {v['worst_recovery']:.2f}" for k, v in candidates.items())
                     + f"): **{_dial_candidate(dial['dial_validation'].get('chosen', dial['dial_steps']))}**.")
    measured = dial if "date" in dial else section  # each study records its own date and machine since --controls
    lines = [f"Measured {measured.get('date', '?')} on {_machine(measured.get('machine', {}))} "
             "(`python -m benchmarks.run_all --only controls`, benchmarks/dial_study.py). "
             f"One refiner trained at w = {dial['w_train']:g} ({dial['train_steps']} steps), then CFG at w against DICE at "
             f"cfg 1 with strength set for w: *linear* is strength = (w - 1) / (w_train - 1), fixed in advance; "
             f"*calibrated* is the grid strength whose images were closest to CFG's at w from the same noise on the "
             f"validation seeds ({pairs['validation']} pairs).{dial_text} Figures on the test seeds ({pairs['test']} pairs): "
             "accuracy; recovery = (DICE - cfg 1) / (CFG at w - cfg 1) with a bootstrap 95% interval over prompts; and "
             "*distance*, the mean squared RGB distance to CFG at w's images over cfg 1's (below 1: nearer CFG at w than "
             f"cfg 1 is). Goal: {dial['goal']}.", ""]
    arms = ["linear", "calibrated"] + (["dial"] if has_dial else [])
    lines += ["| w | CFG at w | cfg 1 | " + " | ".join(f"{a}: strength | accuracy | recovery | distance" for a in arms) + " |",
              "|---|---|---|" + "---|---|---|---|" * len(arms)]
    for r in dial["rows"]:
        lines.append(f"| {r['guidance_scale']:g} | {r['cfg_w']:.3f} | {r['cfg1']:.3f} | "
                     + " | ".join(cell(r[a]) for a in arms) + " |")
    test = dial["accuracy_by_strength"]["test"]
    lines += ["", "Single-scale DICE accuracy by strength (test): " + ", ".join(
        f"{k.removeprefix('dice@')}: {v:.3f}" for k, v in sorted(test.items(), key=lambda kv: float(kv[0][5:])))]
    if has_dial:
        lines += ["", f"Training (node run, teacher and training together): single-scale {dial['train_steps']} steps "
                  f"{dial['train_s']:.0f} s, dial {dial['dial_steps']} steps {dial['dial_train_s']:.0f} s. A dial costs no more "
                  "teacher calls than a single-scale refiner with the same teacher samples per prompt (each trajectory "
                  f"draws its own w); the chosen dial used {dial.get('dial_samples_per_prompt', 8)} per prompt, the "
                  "single-scale refiner 8."]
    return lines



def _stages(st: dict) -> list[str]:
    test, other = st["test"], st["test_other_sampler"]
    base = st["baseline"]
    lines = [f"{_measured(st)}(`python -m benchmarks.run_all --only stages`.) Refiners trained with DICE Train Refiner on "
             f"the toy world's training captions at w = {st['w_train']:g} (batch 32, 8 teacher samples per prompt), then "
             f"KSampler at cfg 1 with stock euler, 20 steps, one model pass per step: a staged refiner's prompt is one "
             f"start_percent/end_percent entry per stage. Each arm's strength (1 or 1.25) was chosen on the validation seeds "
             f"({st['pairs']['validation']} pairs); figures on the test seeds ({st['pairs']['test']} pairs). Recovery = "
             f"(DICE - cfg 1) / (cfg {st['w_train']:g} - cfg 1) with a bootstrap 95% interval over prompts; *vs first* is "
             f"the difference in recovery from the first row, with its interval; *distance* is the mean squared RGB "
             f"distance to cfg {st['w_train']:g}'s images over cfg 1's (lower is closer to CFG). cfg 1 "
             f"{test['cfg1']:.3f}, cfg {st['w_train']:g} {test['cfg5']:.3f}.", "",
             "| arm | strength | training s | accuracy | recovery | vs first | distance | "
             f"{other['sampler']} {other['steps']} steps: recovery | distance |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in st["arms"]:
        r, o = test["arms"][arm], other["arms"][arm]
        lo, hi = r["recovery_ci95"]
        dlo, dhi = r["recovery_minus_baseline_ci95"]
        olo, ohi = o["recovery_ci95"]
        versus = "(first)" if arm == base else f"{r['recovery_minus_baseline']:+.2f} [{dlo:+.2f}, {dhi:+.2f}]"
        lines.append(f"| {r['name']} | {r['strength']:g} | {st['train_s'][arm]:.0f} | {r['accuracy']:.3f} | "
                     f"**{r['recovery']:.2f}** [{lo:.2f}, {hi:.2f}] | {versus} | {r['distance_over_cfg1']:.2f} | "
                     f"{o['recovery']:.2f} [{olo:.2f}, {ohi:.2f}] | {o['distance_over_cfg1']:.2f} |")
    lines += ["", f"On {other['sampler']}, {other['steps']} steps: cfg 1 {other['cfg1']:.3f}, cfg {st['w_train']:g} "
              f"{other['cfg5']:.3f}. Validation recovery: " + ", ".join(
                  f"{st['validation']['arms'][arm]['name']} {st['validation']['arms'][arm]['recovery']:.2f}"
                  for arm in st["arms"]) + "."]
    return lines


def _negative_validation(v: dict) -> str:
    """How the negative-aware settings were chosen. Results before the two-goal rule recorded only the rates."""
    if "means" not in v:
        rates = v["named_colour_rate"]
        return ("Among " + ", ".join(f"{k} (named-colour rate {rates[k]:.3f})" for k in v["candidates"])
                + f", against cfg 5's {rates['cfg=5, negative as uc']:.3f}, by the lowest rate: **{v['chosen']}**.")
    m = v["means"]
    return (f"Rule: {v['rule']}. Named-colour rate / shape-and-position: cfg 5 with the negative "
            f"{m['cfg=5, negative as uc']['shows']:.3f} / {m['cfg=5, negative as uc']['aligned']:.3f}, paper-way DICE "
            f"without one {m['DICE paper-way, no negative']['shows']:.3f} / {m['DICE paper-way, no negative']['aligned']:.3f}, "
            + ", ".join(f"{k} {m[k]['shows']:.3f} / {m[k]['aligned']:.3f}" for k in v["candidates"])
            + f": **{v['chosen']}**.")

def _measured(study: dict) -> str:
    """'Measured <date> on <machine>. ' for a study that records them (the controls' studies, since --controls)."""
    return f"Measured {study['date']} on {_machine(study.get('machine', {}))}. " if "date" in study else ""


def _negatives(neg: dict) -> list[str]:
    t = neg["training"]
    lines = [_measured(neg) + "`benchmarks/negative_study.py`. Evaluation prompts leave the colour out (" + ", ".join(
                f"\"{p}\"" for p in neg["eval_prompts"]) + "), so the model picks one and a colour named in the negative has "
             f"something to remove. Each prompt with each of the {len(neg['negatives'])} colours as the negative: "
             f"{neg['cells']} cells x {neg['seeds']} seeds = {neg['images_per_method']} images per method. *Shows the named "
             "colour*: the rate of images in the colour the negative names (with no negative at all it is about 1/6). "
             "*Shape and position*: the attributes the prompt does specify. 95% bootstrap intervals over the cells. "
             f"Both refiners: DICE Train Refiner on {neg['train_prompts']} prompts (the 54 training captions and the 6 other "
             f"colour-free captions). Paper-way: {neg['train_steps']} steps, 8 teacher samples per prompt. Negative-aware: "
             "negative_prompts = the six colours; teacher samples per pair x steps chosen on "
             f"{neg['validation']['seeds']} validation seeds. " + _negative_validation(neg['validation'])
             + " The test seeds were sampled once, with the chosen refiner.", "",
             "| method | shows the named colour | shape and position |", "|---|---|---|"]
    for name, r in neg["rows"].items():
        lo, hi = r["shows_ci95"]
        alo, ahi = r["aligned_ci95"]
        lines.append(f"| {name} | {r['shows_named_colour']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{r['shape_and_position']:.3f} [{alo:.3f}, {ahi:.3f}] |")
    g = neg["goals"]
    rate, align = g["rate_vs_cfg_w"], g["alignment_vs_paper_dice_without_negative"]
    lines += ["", f"Goals: negative-aware DICE's rate minus cfg 5's with the negative: {rate['gap']:+.3f} "
              f"[{rate['gap_ci95'][0]:+.3f}, {rate['gap_ci95'][1]:+.3f}] (goal {rate['goal']}: "
              f"{'met' if rate['met'] else 'not met'}); its shape-and-position accuracy minus paper-way DICE's without a "
              f"negative: {align['gap']:+.3f} [{align['gap_ci95'][0]:+.3f}, {align['gap_ci95'][1]:+.3f}] (goal "
              f"{align['goal']}: {'met' if align['met'] else 'not met'}).", "",
              f"Cost: the paper-way refiner's teacher sampled {t['paper']['teacher_trajectories']} trajectories "
              f"({t['paper']['samples_per_pair']} per prompt), the negative-aware one "
              f"{t['negative-aware']['teacher_trajectories']} ({t['negative-aware']['samples_per_pair']} per (prompt, "
              f"negative) pair, 7 pairs per prompt, {t['negative-aware']['steps']} steps); node run, teacher and training "
              "together: "
              f"{t['paper']['train_s']:.0f} s against {t['negative-aware']['train_s']:.0f} s."]
    return lines


def _transfer(t: dict) -> list[str]:
    lora, st, rec = t["lora"], t["settings"], t["on_lora_recovery"]
    lines = [_measured(t) + "`benchmarks/transfer_study.py`. The user's situation: a refiner trained for a checkpoint, then a LoRA "
             f"stacked on it. The LoRA is the toy world's style LoRA (`{lora['file']}`, rank {lora['rank']} on "
             f"{lora['layers']} layers, {lora['params']:,} parameters; every object drawn {lora['style']}), loaded with "
             "ComfyUI's LoraLoaderModelOnly at strength 1.0. Two refiners with the same settings (DICE Train Refiner, "
             f"w {st['guidance_scale']:g}, {st['steps']} steps, {st['samples_per_prompt']} teacher samples per prompt), "
             "one trained on the base model and one on base + LoRA, both sampled at cfg 1 on base + LoRA and scored "
             f"against CFG on base + LoRA: {t['pairs']} held-out pairs, every seed a test seed (no choice was made on "
             "them). Recovery = (DICE - cfg 1) / (cfg 5 - cfg 1) with a 95% bootstrap interval over prompts. *Pastel "
             "level*: the style, min channel / max channel of lit pixels (plain 0, pastel 0.4). *Distance*: mean squared "
             "RGB distance to cfg 5's images from the same noise, over cfg 1's.", "",
             "| on base + LoRA | accuracy | recovery | pastel level | distance |", "|---|---|---|---|---|"]
    for name, r in t["on_lora"].items():
        cell = (f"**{rec[name]['recovery']:.2f}** [{rec[name]['ci95'][0]:.2f}, {rec[name]['ci95'][1]:.2f}]"
                if name in rec else "")
        lines.append(f"| {name} | {r['accuracy']:.3f} | {cell} | {r['pastel_level']:.3f} | "
                     f"{r['distance_to_cfg5_over_cfg1']:.2f} |")
    d = rec["difference"]
    base = t["on_base_recovery"]
    lines += ["", f"Difference in recovery, {d['of']}: {d['value']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]. "
              f"For reference, the base-trained refiner on the base model recovers {base['recovery']:.2f} "
              f"[{base['ci95'][0]:.2f}, {base['ci95'][1]:.2f}] (cfg 1 {t['on_base']['cfg1']['accuracy']:.3f}, cfg 5 "
              f"{t['on_base']['cfg5']['accuracy']:.3f}). DICE Refine Conditioning, with the stacked MODEL connected, "
              "compares it with the base_model_hash in the refiner's file: "
              + "; ".join(f"{k} refiner: {v}" for k, v in t["refine_time_check"].items()) + ". Node runs: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in t["train_s"].items()) + "."]
    return lines


def _ci(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def _strength_words(strength) -> str:
    """A chosen strength as the report says it: "strength 1.5", or "strength 1, then 2 from 20% of the sampling on"
    for a StrengthSchedule label such as "1>2@0.2"."""
    from dice_core.refiner import StrengthSchedule

    schedule = StrengthSchedule.parse(strength)
    if schedule.is_constant:
        return f"strength {schedule.phases()[0][0]:g}"
    return f"strength {schedule.strength:g}, then {schedule.late_strength:g} from {schedule.late_from:.0%} of the sampling on"


def _match(row: dict, name: str, teacher: bool) -> str:
    """A method's teacher match as the table shows it: 0 and 1 by definition for cfg 1 and the teacher, "-" where a
    table measured before the match existed has none."""
    if name == "cfg1" or teacher:
        return "1 (itself)" if teacher else "0 (by definition)"
    return f"{row['teacher_match']:.3f} {_ci(row['teacher_match_ci95'])}" if "teacher_match" in row else "-"


def _toyworld2(t: dict) -> list[str]:
    """Toy world 2's table: one block per base model, then the sampler and step-count rows."""
    if "skipped" in t:
        return [f"Not measured: {t['skipped']}."]
    v = t["validation"]
    chosen = v["chosen"]
    # tables measured before the extrapolation baseline joined them have none
    extrapolation_chosen = f", extrapolation c+{chosen['extrapolation']:g}(c-uc)" if "extrapolation" in chosen else ""
    extrapolated = v.get("extrapolation", {})
    extrapolation_scores = ("; extrapolation " + ", ".join(f"c+{k}(c-uc) {a:.3f}" for k, a in extrapolated.items())
                            if extrapolated else "")
    lines = [f"{_measured(t)} Strict analyser on unclamped images; KSampler euler 20 steps unless a row says otherwise. "
             f"Refiners trained by DICE Train Refiner on {t['refiner_captions']} training captions x "
             f"{t['samples_per_prompt']} teacher samples at the teacher's cfg {t['teacher_w']:g} (chosen on validation: cfg 5 "
             "over-drives the objects past the analyser's range), and recovery is measured against it. Chosen on validation "
             f"({t['validation_pairs']} pairs): **{chosen['candidate']} at {_strength_words(chosen['strength'])}**, scaling "
             f"c*{chosen['scale']:g}{extrapolation_chosen}. Figures on the test split ({t['test_pairs']} pairs per method), "
             "with 95% bootstrap intervals over captions.", "",
             f"Validation accuracy: cfg 1 {v['cfg1']:.3f}, cfg {t['teacher_w']:g} {v['cfg_w']:.3f}; DICE "
             + ", ".join(f"{k} {a:.3f}" for k, a in v["dice"].items()) + "; scaling "
             + ", ".join(f"c*{k} {a:.3f}" for k, a in v["scaling"].items()) + extrapolation_scores + ".", ""]
    for base in t["bases"]:
        lines += [f"Base model {base['file']} (base seed {base['base_seed']}):", "",
                  "| method | accuracy | 95% interval | binding | valid | Fréchet | diversity | saturation | teacher match |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in base["methods"].items():
            teacher = name == f"cfg{t['teacher_w']:g}"
            label = f"{name} (teacher)" if teacher else name
            lines.append(f"| {label} | **{r['accuracy']:.3f}** | {_ci(r['accuracy_ci95'])} | {r['binding']:.3f} | {r['valid']:.3f} | "
                         f"{r['frechet']:.3f} | {r['diversity']:.3f} | {r['saturation']:.4f} | {_match(r, name, teacher)} |")
        lines += ["", "Recovery of CFG's gain per refiner seed: " + "; ".join(
            f"seed {k}: **{r['recovery']:.2f}** {_ci(r['ci95'])}, in binding {r.get('binding_recovery', float('nan')):.2f}"
            + (f", teacher match {r['teacher_match']:.3f} {_ci(r['teacher_match_ci95'])}" if "teacher_match" in r else "")
            + f" (trained in {r['train_s']:.0f} s)"
            for k, r in base["recovery"].items()), ""]
        if "shipped_refiner" in base:
            shipped = base["shipped_refiner"]
            lines += [f"Refiner seed {shipped['refiner_seed']}'s refiner is shipped as `toyworld/weights/world2/{shipped['file']}` "
                      f"(sha256 {shipped['sha256'][:12]}...); `tests/test_toyworld2_dice.py` checks it against these figures.", ""]
        if not base["settings_rows"]:  # measured on one base model only
            continue
        lines += [f"Beyond the teacher's settings (euler 20 steps), on base seed {base['base_seed']} with its refiner seed 0:", "",
                  "| sampler | steps | cfg 1 | cfg w | DICE (seed 0) | recovery | teacher match |", "|---|---|---|---|---|---|---|"]
        for r in base["settings_rows"]:
            match = f"{r['teacher_match']:.3f}" if "teacher_match" in r else "-"
            lines.append(f"| {r['sampler']} | {r['steps']} | {r['cfg1']['accuracy']:.3f} | {r['cfg_w']['accuracy']:.3f} | "
                         f"{r['DICE']['accuracy']:.3f} | {r['recovery']:.2f} | {match} |")
        lines.append("")
    return lines


def _controls(section: dict) -> list[str]:
    lines = []
    if "negatives" in section:
        lines += ["#### Negative prompts", ""] + _negatives(section["negatives"]) + [""]
    if "dial" in section:
        lines += ["#### Guidance dial", ""] + _dial(section["dial"], section) + [""]
    if "transfer" in section:
        lines += ["#### A refiner under a LoRA", ""] + _transfer(section["transfer"])
    return lines


def _section_seconds(seconds: dict) -> list[str]:
    lines = ["| section | minutes |", "|---|---|"]
    lines += [f"| {name} | {s / 60:.1f} |" for name, s in seconds.items()]
    return lines


def write_benchmarks_md(results: dict, path: str) -> None:
    from benchmarks import toyworld_table

    lines = [HEADER]
    for key, section in results.items():
        lines += [f"## {key.upper() if key == 'cpu' else key}: {_machine(section.get('machine', {}))}", "",
                  f"Measured {section.get('date', '?')}.", ""]
        if "toyworld2" in section:
            lines += ["### DICE in toy world 2: binding, Fréchet distance, diversity (benchmarks/toyworld2_table.py)", ""]
            lines += _toyworld2(section["toyworld2"]) + [""]
        if "toyworld" in section:
            lines += ["### DICE in the toy world (the paper's table, measured exactly)", "",
                      f"{_measured(section['toyworld'])}(`make bench-studies`, or `python -m benchmarks.run_all --only toyworld`.)", "",
                      "![cfg=1 | cfg=5 | DICE](docs/toyworld_grid.png)", "", toyworld_table.markdown(section["toyworld"]), ""]
        if "sampling" in section:
            lines += ["### Sampling speed-up (full-size architectures, random weights)", ""]
            lines += _sampling(section["sampling"], section.get("unet_probe")) + [""]
        if "unet_probe" in section:
            lines += ["### One bare UNet call against its batch size", ""] + _probe(section["unet_probe"]) + [""]
        if "training_grid" in section:
            lines += ["### Training step and memory: node loop against a minimal PyTorch loop", ""]
            lines += _training_grid(section["training_grid"]) + [""]
        if "precision" in section:
            lines += ["### Training in each precision (correctness, not speed)", ""] + _precision(section["precision"]) + [""]
        if "training" in section:
            lines += ["### Training step: node loop against a minimal PyTorch loop", ""] + _training(section["training"]) + [""]
        if "padding" in section:
            lines += ["### T5 prompts: padded or not (tiny PixArt-alpha, benchmarks/padding_study.py)", ""]
            lines += _padding(section["padding"]) + [""]
        if "controls" in section:
            lines += ["### Controls at sampling time: negative prompts, the guidance dial and LoRAs (toy world)", ""]
            lines += _controls(section["controls"]) + [""]
        if "stages" in section:
            lines += ["### Timestep stages: one refiner per range of the sampling (toy world, benchmarks/stages_study.py)", ""]
            lines += _stages(section["stages"]) + [""]
        if "cost_curve" in section:
            lines += ["### Training cost curve (node loop, full-size SD1.5 UNet)", ""] + _cost(section["cost_curve"]) + [""]
        if "section_seconds" in section:
            lines += ["### What each section cost (wall time of its last run, `benchmarks/run_all.py`)", ""]
            lines += _section_seconds(section["section_seconds"]) + [""]
    extra = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
    if os.path.exists(extra):
        lines += [open(extra).read()]
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    import json

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_benchmarks_md(json.load(open(os.path.join(root, "benchmarks", "results.json"))), os.path.join(root, "BENCHMARKS.md"))
