"""tjx.data: text sources, tokenizers, memmap token shards (prepared in a shared cache), a packed
resumable loader, prefetch, and a training run's data (RunData) prepared, loaded and described."""

from tjx.data.bpe import gpt2_tokenizer, load_tokenizer, save_tokenizer, train_bpe
from tjx.data.builtin import BUILTIN_CORPORA, prepare_builtin
from tjx.data.cache import cache_dir, local_cache_folder
from tjx.data.errors import DataError
from tjx.data.images import (
    ImageDataset,
    ImageLoader,
    image_batches,
    load_digits,
    load_image_dataset,
)
from tjx.data.loader import PackedLoader, validation_batches
from tjx.data.mixture import ON_EXHAUSTED, MixturePart, MixtureRule, MixtureSource, check_mixture
from tjx.data.mixture_loader import MixtureLoader, mixture_validation_batches
from tjx.data.packing import IGNORE_INDEX, PackingPlan, random_batch
from tjx.data.prefetch import DevicePrefetcher, prefetch_to_device
from tjx.data.prepare import PreparedShards, bpe_tokenizer, check_max_tokens, prepare_shards
from tjx.data.pretokenize import pretokenize
from tjx.data.run_data import RunData, restore_loader_state
from tjx.data.run_prepare import prepare_image_run_data, prepare_mixture_run_data, prepare_run_data
from tjx.data.run_tokenizer import run_tokenizer
from tjx.data.shards import ShardIndex, check_tokenizer, dtype_for_vocab, load_index
from tjx.data.sources import Documents, check_local_source, load_source
from tjx.data.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, encode_prompts

__version__ = "0.7.0"

__all__ = [
    "BUILTIN_CORPORA",
    "IGNORE_INDEX",
    "ON_EXHAUSTED",
    "ByteTokenizer",
    "DataError",
    "DevicePrefetcher",
    "Documents",
    "HFTokenizer",
    "ImageDataset",
    "ImageLoader",
    "MixtureLoader",
    "MixturePart",
    "MixtureRule",
    "MixtureSource",
    "PackedLoader",
    "PackingPlan",
    "PreparedShards",
    "RunData",
    "ShardIndex",
    "Tokenizer",
    "__version__",
    "bpe_tokenizer",
    "cache_dir",
    "local_cache_folder",
    "check_local_source",
    "check_max_tokens",
    "check_mixture",
    "check_tokenizer",
    "dtype_for_vocab",
    "encode_prompts",
    "gpt2_tokenizer",
    "image_batches",
    "load_digits",
    "load_image_dataset",
    "load_index",
    "load_source",
    "load_tokenizer",
    "mixture_validation_batches",
    "prefetch_to_device",
    "prepare_shards",
    "random_batch",
    "pretokenize",
    "prepare_builtin",
    "prepare_image_run_data",
    "prepare_mixture_run_data",
    "prepare_run_data",
    "restore_loader_state",
    "run_tokenizer",
    "save_tokenizer",
    "train_bpe",
    "validation_batches",
]
