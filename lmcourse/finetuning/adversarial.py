"""Adversarial training on the word embeddings (FGM), which :class:`~lmcourse.finetuning.trainer.GlueTrainer`
applies when ``fgm_epsilon > 0`` (the ``"FGM ε=1"`` row of the regularisation ablation)."""

from __future__ import annotations

import torch

from lmcourse.errors import LmcourseError


class FGM:
    """Fast Gradient Method on the word embeddings (Miyato et al. 2017, "Adversarial training methods
    for semi-supervised text classification"): after the clean backward pass, move the embedding matrix
    by ``r = ε g / ||g||`` (the direction that increases the loss fastest), do a second forward/backward
    (its gradient adds to the clean one), then put the weights back exactly."""

    def __init__(self, model: torch.nn.Module, epsilon: float = 1.0):
        self.model = model
        self.epsilon = float(epsilon)
        emb = model.get_input_embeddings()
        if emb is None:
            raise LmcourseError("FGM needs a model with get_input_embeddings()")
        self.weight: torch.nn.Parameter = emb.weight
        self._backup: torch.Tensor | None = None

    def attack(self) -> torch.Tensor | None:
        """Add ``ε g/||g||`` to the embeddings (after ``backward``); returns the perturbation (or None)."""
        grad = self.weight.grad
        if grad is None:
            return None
        norm = torch.linalg.vector_norm(grad.float())
        if not torch.isfinite(norm) or norm == 0:
            return None
        self._backup = self.weight.data.clone()
        r = (self.epsilon * grad.float() / norm).to(self.weight.dtype)
        self.weight.data.add_(r)
        return r

    def restore(self) -> None:
        """Put the saved embedding weights back (bit-exact)."""
        if self._backup is not None:
            self.weight.data.copy_(self._backup)
            self._backup = None
