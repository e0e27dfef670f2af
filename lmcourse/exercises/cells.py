"""The text of the cells that end each chapter 01–14: an "Exercises" introduction, one code cell per exercise, and
"Further reading" (the papers the chapter uses, with authors, year, arXiv id or venue, and the library pages of
what it calls). The notebooks get these cells from a script that calls these functions, and the tests run the
same cell text in a kernel.

An exercise cell defines no function (the notebooks' rule): it starts from ``exercises.unanswered(id)``, which a
learner replaces by their own function, and passes it through ``exercises.solution_for_headless`` so that a
headless run (papermill, nbval) checks the course's reference and the chapter runs top to bottom unattended.
"""

from __future__ import annotations

import re
import textwrap

from lmcourse.exercises import exercises_of
from lmcourse.exercises.core import Exercise

READING: dict[int, tuple[list[str], list[str]]] = {
    1: (["Mikolov, Chen, Corrado & Dean (2013). Efficient Estimation of Word Representations in Vector Space. "
         "arXiv:1301.3781",
         "Mikolov, Sutskever, Chen, Corrado & Dean (2013). Distributed Representations of Words and Phrases and "
         "their Compositionality. NeurIPS 2013, arXiv:1310.4546",
         "Pennington, Socher & Manning (2014). GloVe: Global Vectors for Word Representation. EMNLP 2014",
         "Levy, Goldberg & Dagan (2015). Improving Distributional Similarity with Lessons Learned from Word "
         "Embeddings. TACL 2015",
         "Finkelstein et al. (2002). Placing Search in Context: The Concept Revisited. ACM TOIS 2002 (WordSim-353)",
         "Hill, Reichart & Korhonen (2015). SimLex-999. Computational Linguistics 2015, arXiv:1408.3456"],
        ["[gensim Word2Vec](https://radimrehurek.com/gensim/models/word2vec.html)",
         "[torch.nn.Embedding](https://pytorch.org/docs/stable/generated/torch.nn.Embedding.html)"]),
    2: (["Vaswani et al. (2017). Attention Is All You Need. NeurIPS 2017, arXiv:1706.03762",
         "Su et al. (2021). RoFormer: Enhanced Transformer with Rotary Position Embedding. arXiv:2104.09864",
         "Dao et al. (2022). FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness. "
         "NeurIPS 2022, arXiv:2205.14135",
         "Clark, Khandelwal, Levy & Manning (2019). What Does BERT Look At? BlackboxNLP 2019, arXiv:1906.04341"],
        ["[torch.nn.functional.scaled_dot_product_attention](https://pytorch.org/docs/stable/generated/"
         "torch.nn.functional.scaled_dot_product_attention.html)",
         "[torch.nn.MultiheadAttention](https://pytorch.org/docs/stable/generated/torch.nn.MultiheadAttention.html)"]),
    3: (["Vaswani et al. (2017). Attention Is All You Need. NeurIPS 2017, arXiv:1706.03762",
         "Devlin, Chang, Lee & Toutanova (2019). BERT: Pre-training of Deep Bidirectional Transformers for Language "
         "Understanding. NAACL 2019, arXiv:1810.04805",
         "Radford et al. (2019). Language Models are Unsupervised Multitask Learners. OpenAI technical report",
         "Ba, Kiros & Hinton (2016). Layer Normalization. arXiv:1607.06450",
         "Hendrycks & Gimpel (2016). Gaussian Error Linear Units (GELUs). arXiv:1606.08415",
         "Kaplan et al. (2020). Scaling Laws for Neural Language Models. arXiv:2001.08361"],
        ["[transformers: BERT](https://huggingface.co/docs/transformers/model_doc/bert)",
         "[transformers: GPT-2](https://huggingface.co/docs/transformers/model_doc/gpt2)"]),
    4: (["Sennrich, Haddow & Birch (2016). Neural Machine Translation of Rare Words with Subword Units. ACL 2016, "
         "arXiv:1508.07909",
         "Schuster & Nakajima (2012). Japanese and Korean Voice Search. ICASSP 2012 (WordPiece)",
         "Wu et al. (2016). Google's Neural Machine Translation System. arXiv:1609.08144",
         "Kudo & Richardson (2018). SentencePiece. EMNLP 2018 (demo), arXiv:1808.06226"],
        ["[Hugging Face tokenizers](https://huggingface.co/docs/tokenizers/index)",
         "[transformers: summary of the tokenizers](https://huggingface.co/docs/transformers/tokenizer_summary)"]),
    5: (["Devlin, Chang, Lee & Toutanova (2019). BERT. NAACL 2019, arXiv:1810.04805",
         "Liu et al. (2019). RoBERTa: A Robustly Optimized BERT Pretraining Approach. arXiv:1907.11692",
         "Izsak, Berchansky & Levy (2021). How to Train BERT with an Academic Budget. EMNLP 2021, arXiv:2104.07705",
         "Wettig, Gao, Zhong & Chen (2023). Should You Mask 15% in Masked Language Modeling (EACL 2023, "
         "arXiv:2202.08005)?",
         "Gao et al. (2019). Representation Degeneration Problem in Training Natural Language Generation Models. "
         "ICLR 2019, arXiv:1907.12009"],
        ["[transformers: DataCollatorForLanguageModeling](https://huggingface.co/docs/transformers/main_classes/"
         "data_collator)",
         "[transformers: Trainer](https://huggingface.co/docs/transformers/main_classes/trainer)"]),
    6: (["Radford et al. (2019). Language Models are Unsupervised Multitask Learners. OpenAI technical report",
         "Holtzman, Buys, Du, Forbes & Choi (2020). The Curious Case of Neural Text Degeneration. ICLR 2020, "
         "arXiv:1904.09751 (nucleus sampling)",
         "Fan, Lewis & Dauphin (2018). Hierarchical Neural Story Generation. ACL 2018, arXiv:1805.04833 (top-k)",
         "Pope et al. (2022). Efficiently Scaling Transformer Inference. arXiv:2211.05102 (the KV cache)",
         "Karpathy (2022). nanoGPT. GitHub repository karpathy/nanoGPT"],
        ["[transformers: generation strategies](https://huggingface.co/docs/transformers/generation_strategies)",
         "[transformers: text generation](https://huggingface.co/docs/transformers/main_classes/text_generation)"]),
    7: (["Wang et al. (2019). GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language "
         "Understanding. ICLR 2019, arXiv:1804.07461",
         "Dodge et al. (2020). Fine-Tuning Pretrained Language Models: Weight Initializations, Data Orders, and "
         "Early Stopping. arXiv:2002.06305",
         "Mosbach, Andriushchenko & Klakow (2021). On the Stability of Fine-tuning BERT. ICLR 2021, "
         "arXiv:2006.04884",
         "Loshchilov & Hutter (2019). Decoupled Weight Decay Regularization. ICLR 2019, arXiv:1711.05101",
         "Miyato, Dai & Goodfellow (2017). Adversarial Training Methods for Semi-Supervised Text Classification. "
         "ICLR 2017, arXiv:1605.07725",
         "Wang et al. (2020). MiniLM. NeurIPS 2020, arXiv:2002.10957"],
        ["[transformers: Trainer](https://huggingface.co/docs/transformers/main_classes/trainer)",
         "[transformers: optimization and schedules](https://huggingface.co/docs/transformers/main_classes/"
         "optimizer_schedules)",
         "[evaluate](https://huggingface.co/docs/evaluate/index)"]),
    8: (["Hu et al. (2021). LoRA: Low-Rank Adaptation of Large Language Models. ICLR 2022, arXiv:2106.09685",
         "Houlsby et al. (2019). Parameter-Efficient Transfer Learning for NLP. ICML 2019, arXiv:1902.00751",
         "Pfeiffer et al. (2021). AdapterFusion. EACL 2021, arXiv:2005.00247",
         "Ben Zaken, Ravfogel & Goldberg (2022). BitFit. ACL 2022, arXiv:2106.10199",
         "Lester, Al-Rfou & Constant (2021). The Power of Scale for Parameter-Efficient Prompt Tuning. EMNLP 2021, "
         "arXiv:2104.08691",
         "Li & Liang (2021). Prefix-Tuning. ACL 2021, arXiv:2101.00190",
         "Snell, Swersky & Zemel (2017). Prototypical Networks for Few-shot Learning. NeurIPS 2017, "
         "arXiv:1703.05175"],
        ["[PEFT](https://huggingface.co/docs/peft/index)",
         "[PEFT: LoRA](https://huggingface.co/docs/peft/package_reference/lora)"]),
    9: (["Wang et al. (2019). GLUE. ICLR 2019, arXiv:1804.07461",
         "Benjamini & Hochberg (1995). Controlling the False Discovery Rate. Journal of the Royal Statistical "
         "Society B 57(1)",
         "Dror, Baumer, Shlomov & Reichart (2018). The Hitchhiker's Guide to Testing Statistical Significance in "
         "Natural Language Processing. ACL 2018",
         "Dodge et al. (2020). Fine-Tuning Pretrained Language Models. arXiv:2002.06305",
         "Mosbach, Andriushchenko & Klakow (2021). On the Stability of Fine-tuning BERT. ICLR 2021, "
         "arXiv:2006.04884"],
        ["[scipy.stats.false_discovery_control](https://docs.scipy.org/doc/scipy/reference/generated/"
         "scipy.stats.false_discovery_control.html)",
         "[scipy.stats.ttest_rel](https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.ttest_rel.html)"]),
    10: (["Raffel et al. (2020). Exploring the Limits of Transfer Learning with a Unified Text-to-Text "
          "Transformer. JMLR 21, arXiv:1910.10683",
          "Shazeer (2020). GLU Variants Improve Transformer. arXiv:2002.05202",
          "Lewis et al. (2020). BART. ACL 2020, arXiv:1910.13461",
          "Papineni, Roukos, Ward & Zhu (2002). BLEU: a Method for Automatic Evaluation of Machine Translation. "
          "ACL 2002"],
         ["[transformers: T5](https://huggingface.co/docs/transformers/model_doc/t5)",
          "[transformers: generation strategies](https://huggingface.co/docs/transformers/generation_strategies)"]),
    11: (["Hinton, Vinyals & Dean (2015). Distilling the Knowledge in a Neural Network. arXiv:1503.02531",
          "Sanh, Debut, Chaumond & Wolf (2019). DistilBERT. arXiv:1910.01108",
          "Jacob et al. (2018). Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only "
          "Inference. CVPR 2018, arXiv:1712.05877",
          "Han, Mao & Dally (2016). Deep Compression. ICLR 2016, arXiv:1510.00149",
          "Michel, Levy & Neubig (2019). Are Sixteen Heads Really Better than One? NeurIPS 2019, arXiv:1905.10650"],
         ["[PyTorch quantization](https://pytorch.org/docs/stable/quantization.html)",
          "[PyTorch pruning tutorial](https://pytorch.org/tutorials/intermediate/pruning_tutorial.html)",
          "[ONNX Runtime](https://onnxruntime.ai/docs/)"]),
    12: (["Sundararajan, Taly & Yan (2017). Axiomatic Attribution for Deep Networks. ICML 2017, arXiv:1703.01365",
          "Abnar & Zuidema (2020). Quantifying Attention Flow in Transformers. ACL 2020, arXiv:2005.00928",
          "Samek et al. (2017). Evaluating the Visualization of What a Deep Neural Network Has Learned. IEEE TNNLS, "
          "arXiv:1509.06321",
          "DeYoung et al. (2020). ERASER: A Benchmark to Evaluate Rationalized NLP Models. ACL 2020, "
          "arXiv:1911.03429",
          "Lundberg & Lee (2017). A Unified Approach to Interpreting Model Predictions. NeurIPS 2017, "
          "arXiv:1705.07874",
          "Jain & Wallace (2019). Attention is not Explanation. NAACL 2019, arXiv:1902.10186",
          "Hewitt & Liang (2019). Designing and Interpreting Probes with Control Tasks. EMNLP 2019, "
          "arXiv:1909.03368",
          "Adebayo et al. (2018). Sanity Checks for Saliency Maps. NeurIPS 2018, arXiv:1810.03292"],
         ["[Captum: IntegratedGradients](https://captum.ai/api/integrated_gradients.html)",
          "[SHAP](https://shap.readthedocs.io/en/latest/)"]),
    13: (["McCloskey & Cohen (1989). Catastrophic Interference in Connectionist Networks. Psychology of Learning "
          "and Motivation 24",
          "French (1999). Catastrophic Forgetting in Connectionist Networks. Trends in Cognitive Sciences 3(4)",
          "Kirkpatrick et al. (2017). Overcoming Catastrophic Forgetting in Neural Networks. PNAS 2017, "
          "arXiv:1612.00796",
          "Lopez-Paz & Ranzato (2017). Gradient Episodic Memory for Continual Learning. NeurIPS 2017, "
          "arXiv:1706.08840",
          "Chaudhry et al. (2019). On Tiny Episodic Memories in Continual Learning. arXiv:1902.10486",
          "Hu et al. (2021). LoRA. ICLR 2022, arXiv:2106.09685"],
         ["[PEFT](https://huggingface.co/docs/peft/index)",
          "[torch.autograd.grad](https://pytorch.org/docs/stable/generated/torch.autograd.grad.html)"]),
    14: (["Gururangan et al. (2020). Don't Stop Pretraining. ACL 2020, arXiv:2004.10964",
          "Howard & Ruder (2018). Universal Language Model Fine-tuning for Text Classification. ACL 2018, "
          "arXiv:1801.06146",
          "Izsak, Berchansky & Levy (2021). How to Train BERT with an Academic Budget. EMNLP 2021, arXiv:2104.07705",
          "Geiping & Goldstein (2023). Cramming: Training a Language Model on a Single GPU in One Day. ICML 2023, "
          "arXiv:2212.14034",
          "He, Girshick & Dollár (2019). Rethinking ImageNet Pre-training. ICCV 2019, arXiv:1811.08883",
          "Muennighoff et al. (2023). Scaling Data-Constrained Language Models. NeurIPS 2023, arXiv:2305.16264",
          "Wang et al. (2020). MiniLM. NeurIPS 2020, arXiv:2002.10957"],
         ["[sentence-transformers](https://www.sbert.net/)",
          "[scikit-learn: LogisticRegression](https://scikit-learn.org/stable/modules/generated/"
          "sklearn.linear_model.LogisticRegression.html)"]),
}

INTRO = """## Exercises

Each exercise below is a code cell. Replace the `exercises.unanswered(...)` line by your own function (same name),
then run the cell: `exercises.check` tries it on seeded random inputs and edge cases (odd sizes, padding, masks, a
batch of one) against the course's reference and names the first case that differs, with a hint for the mistake
it recognises. `exercises.hint("<id>")` and `exercises.solution("<id>")` are there when you want them;
`lmcourse exercises` on the command line lists what you have passed. In a headless run (papermill, nbval) the
cells check the course's reference instead, so the chapter still runs top to bottom.

{items}
"""


def answer_name(ex: Exercise) -> str:
    """The name the exercise cell gives the learner's answer (``my_attention``; ``my_answer`` for open ones)."""
    if ex.kind == "open":
        return "my_answer"
    m = re.search(r"`([A-Za-z_][A-Za-z0-9_]*)\(", ex.statement)
    return f"my_{m.group(1)}" if m else "my_answer"


def _signature(ex: Exercise) -> str:
    m = re.search(r"`([A-Za-z_][A-Za-z0-9_]*\([^`]*\))`", ex.statement)
    return m.group(1) if m else "answer(...)"


def code_cell_source(ex: Exercise) -> str:
    """The code cell of one exercise: its statement as comments, the placeholder answer, the check."""
    name = answer_name(ex)
    wrapped = textwrap.wrap(ex.statement, 108)
    lines = [f"# Exercise {ex.id} · {ex.title}", *[f"# {w}" for w in wrapped], "#"]
    if ex.kind == "open":
        lines += ["# Replace the next line by your answer, for example:",
                  f"#     {name} = lambda: {{'prediction': 'no difference', 'why': '...', 'comparison': None}}"]
    else:
        sig = _signature(ex)
        lines += [f"# Replace the next line by your function, named {name}:",
                  f"#     def {name}{sig[sig.index('('):]}:", "#         ..."]
    lines += ["from lmcourse import exercises", "",
              f"{name} = exercises.unanswered({ex.id!r})",
              f"{name} = exercises.solution_for_headless({ex.id!r}, {name})  # headless runs check the reference",
              f"exercises.check({ex.id!r}, {name});"]
    return "\n".join(lines)


def reading_markdown(chapter: int) -> str:
    """The "Further reading" markdown cell of a chapter."""
    papers, docs = READING[chapter]
    return ("## Further reading\n\nPapers this chapter uses:\n\n" + "\n".join(f"- {p}" for p in papers)
            + "\n\nLibrary documentation of what it calls:\n\n" + "\n".join(f"- {d}" for d in docs) + "\n")


def intro_markdown(chapter: int) -> str:
    """The "Exercises" markdown cell of a chapter: how to answer, and its exercises."""
    items = "\n".join(f"- `{ex.id}`: {ex.title}{' (open: predict, run, compare)' if ex.kind == 'open' else ''}"
                      for ex in exercises_of(chapter))
    return INTRO.format(items=items)


def cell_id(chapter: int, suffix: str) -> str:
    """A notebook cell id for the exercise cells of ``chapter`` (``exNN-...``, valid for nbformat)."""
    return f"ex{chapter:02d}-{re.sub(r'[^A-Za-z0-9-]', '-', suffix)}"[:64]
