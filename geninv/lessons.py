"""Guided lessons: each one a full experiment with a short "what to notice".

A lesson is data only: a :class:`~geninv.session.Experiment` (generator, signal, corruption, methods and
their options), the text a student reads beside the results, and which controls of the dashboard
it unfolds. The dashboard opens one from its selector or from a link ``?lesson=NAME``; the README
lists them (``python -c "import geninv.lessons as l; print(l.markdown())"`` writes that list), and a
test runs every lesson and checks that what its text says is what happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from geninv.session import Corruption, Experiment


@dataclass(frozen=True)
class Lesson:
    """One guided experiment.

    Attributes
    ----------
    name : str
        Short identifier, used in links (``?lesson=NAME``).
    title : str
        One line: the claim the lesson shows.
    experiment : Experiment
    notice : tuple of str
        "What to notice": a few short sentences, each a bullet.
    unfold : tuple of str
        Controls the dashboard opens for this lesson: ``"options:METHOD"`` (a method's options), and the
        results tab to show first, the first of ``"certificate"``, ``"replay"``, ``"network"`` (the replay
        with the network picture).
    replay : str
        The method the replay shows first.
    """

    name: str
    title: str
    experiment: Experiment
    notice: tuple[str, ...]
    unfold: tuple[str, ...] = ()
    replay: str = ""


LESSONS: dict[str, Lesson] = {
    lesson.name: lesson
    for lesson in (
        Lesson(
            name="expansion",
            title="Expansion makes a generator invertible",
            experiment=Experiment(
                generator="random:20-60-180-540:seed=1",
                latent_seed=3,
                methods=("gd", "latent-pursuit", "hybrid"),
            ),
            notice=(
                "Every layer is three times wider than the one below (20 → 60 → 180 → 540): about half of "
                "the units are active, so each layer gives at least twice as many equations as the layer "
                "below has unknowns.",
                "The certificate says identifiable and stable, and every method recovers z to about 1e-14 "
                "(latent error column). Latent-pursuit needs three small linear solves; gd needs thousands "
                "of gradient steps.",
                "Replay latent-pursuit: the network picture fills from the output back to z, every unit "
                "found (blue), none missed (orange).",
                "Try it: set the widths to 20-30-45-68 (expansion 1.5) and press Run: the certificate "
                "turns to not identifiable and no method finds z.",
            ),
            unfold=("network",),
            replay="latent-pursuit",
        ),
        Lesson(
            name="contraction",
            title="A contracting network cannot be inverted",
            experiment=Experiment(
                generator="random:20-10-200-784:seed=1",
                latent_seed=3,
                methods=("gd", "latent-pursuit", "hybrid"),
            ),
            notice=(
                "The first layer squeezes the 20 latent numbers into 10 units, of which only a few are "
                "active: the output cannot hold enough information to tell z apart from other latents.",
                "Latent-pursuit and hybrid reproduce the output to about 1e-16 (PSNR above 300 dB), yet "
                "their latent error is large: they found another latent with the same output.",
                "The certificate says not identifiable: the Jacobian of the output has rank below 20. No "
                "method can do better, however long it runs.",
            ),
            unfold=("certificate",),
            replay="latent-pursuit",
        ),
        Lesson(
            name="masks",
            title="Hidden pixels: layer-wise pursuit is exact where gradient descent is slow",
            experiment=Experiment(
                latent_seed=7,
                corruption=Corruption(mask="box", box=(7, 7, 14, 14)),
                methods=("gd", "latent-pursuit"),
            ),
            notice=(
                "A 14 × 14 box in the middle of the MNIST digit is hidden: 588 of 784 pixels remain.",
                "Latent-pursuit recovers z to about 1e-14 in a fraction of a second: each layer's "
                "equations on the observed pixels determine it (certificate: every step identifiable).",
                "gd runs its whole budget (2 restarts × 8000 Adam steps) and stops at a latent error "
                "around 1e-1 although its image is within 0.2% of the truth: it is not stuck in a wrong "
                "basin, its error is still falling slowly (Convergence tab) because this latent is badly "
                "conditioned. With more steps it gets there; pursuit does not need them.",
                "This sample is one of gd's slow cases, not the rule: the Batch tab (20 samples) shows gd "
                "reaching the threshold on most samples but not all, latent-pursuit on every one, at about "
                "a hundredth of gd's time; read the success rates with their confidence intervals.",
            ),
            unfold=("options:gd", "replay"),
            replay="gd",
        ),
        Lesson(
            name="noise",
            title="Noise: the image is fine, the latent is lost",
            experiment=Experiment(
                latent_seed=3,
                corruption=Corruption(noise="snr", snr_db=20.0),
                methods=("gd", "hybrid"),
            ),
            notice=(
                "Gaussian noise at 20 dB on every pixel of an MNIST sample. The reconstructions are "
                "clean (PSNR around 46 dB), yet every latent error is above 1.",
                "This is not a bug of the methods: the oracle row (least squares that knows the true "
                "supports, which no method does) is just as far. The decoder's latent is identifiable "
                "but badly conditioned: the certificate reports a noise gain in the hundreds and a "
                "condition number around 700, and predicts the oracle's error from the noise level.",
                "Why the equation count drops: a sigmoid pixel within 3σ of 0 or 1 gives no equation "
                "(its value says only 'near the bound'), and MNIST's background is near 0, so most "
                "pixels drop out of the layer-by-layer test.",
                "Compare with the lesson 'stable-noise': the same noise on a well-conditioned random "
                "generator costs only about 1% of the latent.",
            ),
            unfold=("certificate",),
            replay="hybrid",
        ),
        Lesson(
            name="stable-noise",
            title="A well-conditioned generator keeps the latent under noise",
            experiment=Experiment(
                generator="random:20-128-392-784:seed=1",
                latent_seed=3,
                corruption=Corruption(noise="snr", snr_db=20.0),
                methods=("gd", "hybrid"),
            ),
            notice=(
                "The same 20 dB noise as in the 'noise' lesson, on a random 20-128-392-784 generator.",
                "Here the latent error is about 0.01, like the noise itself: the certificate says "
                "identifiable and stable (condition number in single digits), and predicts the oracle's "
                "error (about 0.02) before anything runs.",
                "Hybrid reaches the oracle in a fraction of gd's time: pursuit, then a joint refit on "
                "the activation pattern it found.",
            ),
            unfold=("certificate",),
            replay="hybrid",
        ),
        Lesson(
            name="leaky-relu",
            title="Leaky-relu versus relu: nothing is sparse, every unit is an unknown",
            experiment=Experiment(
                generator="random:20-128-392-784:seed=1:hidden=leaky_relu",
                latent_seed=3,
                corruption=Corruption(mask="random", missing=0.6),
                methods=("lbp", "latent-pursuit", "hybrid"),
            ),
            notice=(
                "A leaky-relu is invertible unit by unit: a unit on the negative side still passes on a "
                "scaled copy of its input, so it is not 'off'. Every one of the 392 units of the last "
                "hidden layer is an unknown, not only the ~170 on the positive side (certificate table: "
                "non-zeros 392).",
                "With 60% of the pixels hidden only 314 equations remain for those 392 unknowns: the "
                "layer-by-layer test fails at that step (certificate table), yet the whole network has "
                "only 20 unknowns and stays identifiable. The methods' joint refit of z recovers it "
                "exactly.",
                "Compare: switch Hidden to relu in the sidebar and press Run. Only about 174 of the 392 "
                "units are active, so 314 equations are enough for the layer on its own.",
            ),
            unfold=("certificate", "network"),
            replay="latent-pursuit",
        ),
        Lesson(
            name="real-digit",
            title="A real digit is not in the generator's range",
            experiment=Experiment(
                digit=3,
                corruption=Corruption(mask="half"),
                methods=("gd", "latent-pursuit"),
            ),
            notice=(
                "The signal is a real MNIST test digit, not a sample of the generator, with its bottom "
                "half hidden. No latent reproduces it exactly.",
                "The projection is the best fit found in the generator's range (the whole digit, many "
                "restarts): even it is about 18% away from the digit, and its latent is far outside the "
                "N(0, I) the generator was trained on.",
                "Each method lands somewhere else: compare its error to the digit with the projection's. "
                "Latent-pursuit's exact layer-by-layer equations assume the signal is in the range; here "
                "they do not hold, and gd's least-squares fit of the visible half does better.",
            ),
            unfold=("replay",),
            replay="gd",
        ),
    )
}
"""Every lesson, by name, in the order the dashboard lists them."""


def get(name: str) -> Lesson:
    """The lesson called ``name`` (error naming the lessons otherwise)."""
    from geninv._validation import check_choice

    return LESSONS[check_choice("lesson", name, tuple(LESSONS))]


def markdown() -> str:
    """The lessons as a Markdown list (names, titles, what to notice), as the README shows them."""
    lines = []
    for lesson in LESSONS.values():
        lines.append(f"- **`{lesson.name}`** — {lesson.title}. Link: `?lesson={lesson.name}`")
        lines.extend(f"  - {text}" for text in lesson.notice)
    return "\n".join(lines)
