"""Small neural networks for fields of (t, x) and conditional fields of (t, x, c): MLPs with a
sinusoidal time/noise embedding and a class-label or context input."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimeEmbedding", "MLP", "TimeMLP", "ConditionalTimeMLP", "init_linear_"]

_ACTIVATIONS = {"silu": nn.SiLU, "selu": nn.SELU, "gelu": nn.GELU, "tanh": nn.Tanh, "softplus": nn.Softplus,
                "relu": nn.ReLU, "elu": nn.ELU}


def _activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


def init_linear_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default ``nn.Linear`` initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
    biases, drawn from ``generator`` instead of the global RNG (in place; returns ``module``)."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)
    return module


class TimeEmbedding(nn.Module):
    """Sinusoidal features of a scalar t (time or log-noise level): (n,) -> (n, dim).

    ``dim`` features: ``[t, sin(2^j pi t), cos(2^j pi t) ...]``-style Fourier features with geometric
    frequencies from 1 to ``max_freq``.
    """

    def __init__(self, dim: int = 16, max_freq: float = 64.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even integer >= 2, got {dim}")
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), dim // 2)) * math.pi
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1).to(self.freqs.dtype)
        a = t * self.freqs
        return torch.cat([torch.sin(a), torch.cos(a)], -1)


class MLP(nn.Module):
    """Plain MLP ``in_dim -> hidden x depth -> out_dim``.

    Weights are initialised from ``generator`` (default: a generator seeded with 0), never from the
    global RNG, so a model is reproducible from its arguments alone.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3, activation: str = "silu",
                 generator: torch.Generator | None = None):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden), ("depth", depth)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        act = _activation(activation)
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.utils.skip_init(nn.Linear, d, hidden), act()]
            d = hidden
        layers.append(nn.utils.skip_init(nn.Linear, d, out_dim))
        self.net = nn.Sequential(*layers)
        init_linear_(self, generator if generator is not None else torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TimeMLP(nn.Module):
    """A field ``(t, x) -> R^out_dim``: MLP on ``[x, embed(t)]``.

    Parameters
    ----------
    dim : int
        Dimension of x.
    out_dim : int, optional
        Output dimension (default ``dim``).
    hidden, depth : int
        Width and number of hidden layers.
    time_embedding : int
        Size of the sinusoidal embedding of t (0: feed t raw).
    activation : str
        ``silu`` (default), ``selu``, ``gelu``, ``tanh``, ``softplus``, ``relu``, ``elu``.
    generator : torch.Generator, optional
        Source of the initial weights (default: seeded with 0; the global RNG is never used).

    Examples
    --------
    >>> import torch
    >>> f = TimeMLP(2)
    >>> f(torch.rand(5), torch.randn(5, 2)).shape
    torch.Size([5, 2])
    """

    def __init__(self, dim: int, out_dim: int | None = None, hidden: int = 128, depth: int = 3,
                 time_embedding: int = 16, activation: str = "silu", generator: torch.Generator | None = None):
        super().__init__()
        self.dim = dim
        self.embed = TimeEmbedding(time_embedding) if time_embedding else None
        t_dim = time_embedding if time_embedding else 1
        self.mlp = MLP(dim + t_dim, out_dim or dim, hidden, depth, activation, generator=generator)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        t = t.reshape(-1)
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        emb = self.embed(t).to(x.dtype) if self.embed is not None else t[:, None]
        return self.mlp(torch.cat([x, emb], -1))


def _time_column(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` (a number or shape (n,)) as a float tensor of shape (n,) in x's dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    t = t.reshape(-1)
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


class ConditionalTimeMLP(nn.Module):
    """A conditional field ``(t, x, c) -> R^out_dim``: MLP on ``[x, embed(t), embed(c)]``.

    The condition is either a class label or a context vector, with a *null* condition for the
    unconditional branch that classifier-free guidance needs (Ho & Salimans 2022):

    - ``n_classes=K``: ``c`` is an integer tensor of shape (n,) with values in ``0..K-1``, or ``-1``
      (:data:`genstat.interpolants.NULL_LABEL`) for "no label"; the null label has its own learned
      embedding (row ``K`` of the table).
    - ``context_dim=k``: ``c`` is a float tensor of shape (n, k); a row of NaNs is the null context,
      fed to the network as zeros plus a null flag (so the null is learned and distinct from the
      genuine context 0).

    ``c=None`` means the null condition for every row.

    Parameters
    ----------
    dim : int
        Dimension of x.
    n_classes, context_dim : int
        Exactly one of them: number of classes, or dimension of the context.
    out_dim : int, optional
        Output dimension (default ``dim``).
    hidden, depth : int
        Width and number of hidden layers.
    time_embedding : int
        Size of the sinusoidal embedding of t (0: feed t raw).
    label_embedding : int
        Size of the learned label embedding (classes only).
    activation : str
        As for :class:`TimeMLP`.
    generator : torch.Generator, optional
        Source of the initial weights and embeddings (default: seeded with 0; never the global RNG).

    Examples
    --------
    >>> import torch
    >>> f = ConditionalTimeMLP(2, n_classes=3, hidden=16)
    >>> f(torch.rand(4), torch.randn(4, 2), torch.tensor([0, 2, -1, 1])).shape
    torch.Size([4, 2])
    >>> ConditionalTimeMLP(2, context_dim=5)(torch.rand(4), torch.randn(4, 2), torch.randn(4, 5)).shape
    torch.Size([4, 2])
    """

    def __init__(self, dim: int, *, n_classes: int | None = None, context_dim: int | None = None,
                 out_dim: int | None = None, hidden: int = 128, depth: int = 3, time_embedding: int = 16,
                 label_embedding: int = 16, activation: str = "silu", generator: torch.Generator | None = None):
        super().__init__()
        if (n_classes is None) == (context_dim is None):
            raise ValueError("give exactly one of n_classes= (class labels) or context_dim= (context vectors)")
        for name, v in (("dim", dim), ("n_classes", n_classes), ("context_dim", context_dim),
                        ("label_embedding", label_embedding)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.dim, self.n_classes, self.context_dim = dim, n_classes, context_dim
        self.embed = TimeEmbedding(time_embedding) if time_embedding else None
        t_dim = time_embedding if time_embedding else 1
        c_dim = label_embedding if n_classes is not None else context_dim + 1
        self.mlp = MLP(dim + t_dim + c_dim, out_dim or dim, hidden, depth, activation, generator=gen)
        if n_classes is not None:
            self.label = nn.Embedding(n_classes + 1, label_embedding)  # row n_classes: the null label
            with torch.no_grad():
                self.label.weight.normal_(generator=gen)
        else:
            self.label = None

    def _condition(self, c, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.n_classes is not None:
            if c is None:
                c = torch.full((n,), -1, dtype=torch.int64, device=x.device)
            c = torch.as_tensor(c, device=x.device)
            if c.is_floating_point() or c.dtype == torch.bool or c.shape != (n,):
                raise ValueError(f"c must be an integer tensor of shape ({n},) (class labels), got "
                                 f"{c.dtype} of shape {tuple(c.shape)}")
            if n and (int(c.min()) < -1 or int(c.max()) >= self.n_classes):
                raise ValueError(f"c must hold labels in 0..{self.n_classes - 1} or -1 (null), got values in "
                                 f"[{int(c.min())}, {int(c.max())}]")
            return self.label(torch.where(c < 0, self.n_classes, c)).to(x.dtype)
        k = self.context_dim
        if c is None:
            return torch.cat([x.new_zeros(n, k), x.new_ones(n, 1)], -1)
        c = torch.as_tensor(c, device=x.device)
        if not c.is_floating_point() or c.shape != (n, k):
            raise ValueError(f"c must be a float tensor of shape ({n}, {k}) (contexts), got {c.dtype} of shape "
                             f"{tuple(c.shape)}")
        null = torch.isnan(c).any(1, keepdim=True)
        return torch.cat([torch.where(null, 0.0, c).to(x.dtype), null.to(x.dtype)], -1)

    def forward(self, t: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        t = _time_column(t, x)
        emb = self.embed(t).to(x.dtype) if self.embed is not None else t[:, None]
        return self.mlp(torch.cat([x, emb, self._condition(c, x)], -1))
