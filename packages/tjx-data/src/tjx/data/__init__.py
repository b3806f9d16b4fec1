"""tjx.data: text sources, tokenizers, memmap token shards (prepared in a shared cache), a packed
resumable loader, prefetch, a training run's data (RunData) prepared, loaded and described, and
post-training data: chat templates in a sandbox, conversations with their loss mask and
preference pairs, packed and resumable; reward functions for GRPO (`tjx.data.rewards`). A run's
data settings are one `DataConfig`, prepared and loaded by `prepare_run` and `run_loader`."""

from tjx.data.bpe import gpt2_tokenizer, load_tokenizer, save_tokenizer, train_bpe
from tjx.data.builtin import BUILTIN_CORPORA, prepare_builtin
from tjx.data.cache import cache_dir, local_cache_folder
from tjx.data.chat.encode import ChatEncoder, Encoded, Pair
from tjx.data.chat.loader import (
    ChatLoader,
    PreferenceLoader,
    PromptLoader,
    chat_validation_batches,
)
from tjx.data.chat.prepare import PreparedSequences, Rows, load_rows, prepare_chat_data
from tjx.data.chat.run import DATA_FORMATS, ChatRunData, prepare_chat_run_data
from tjx.data.chat.store import SequenceIndex, load_sequences, read_prompt_rows, write_sequences
from tjx.data.chat.tasks import (
    ARITHMETIC,
    GENERATED,
    REVERSE,
    REVERSE_LONG,
    REVERSE_LONG_LENGTHS,
    arithmetic_rows,
    prepare_arithmetic,
    prepare_generated,
    reverse_long_rows,
    reverse_rows,
)
from tjx.data.chat.template import ChatTemplate
from tjx.data.documents import DocumentIndex, Origin, exclude_ranges, load_documents
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
from tjx.data.rewards import (
    REWARDS,
    Reward,
    RewardError,
    check_reward_weights,
    check_rewards,
    completion_texts,
    register_reward,
    reward_named,
    score_each,
)
from tjx.data.run.config import DataConfig
from tjx.data.run.data import RunData, restore_loader_state
from tjx.data.run.prepare import prepare_image_run_data, prepare_mixture_run_data, prepare_run_data
from tjx.data.run.rules import (
    READ_IN,
    check_data_config,
    check_local_sources,
    check_template,
    read_elsewhere,
    read_in,
)
from tjx.data.run.setup import (
    compressed_files,
    compressions_of,
    config_tokenizer,
    config_vocab,
    describe_sources,
    left_out_note,
    left_out_summary,
    prepare_run,
    run_loader,
    run_sources,
    truncation_summary,
)
from tjx.data.run.tokenizer import check_run_tokenizer, run_tokenizer, same_tokenizer
from tjx.data.shards import ShardIndex, check_tokenizer, dtype_for_vocab, load_index
from tjx.data.sources import Documents, check_local_source, load_source
from tjx.data.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, encode_prompts

__version__ = "0.25.0"

__all__ = [
    "read_prompt_rows",
    "PromptLoader",
    "reward_named",
    "register_reward",
    "check_reward_weights",
    "check_rewards",
    "completion_texts",
    "score_each",
    "RewardError",
    "Reward",
    "REWARDS",
    "BUILTIN_CORPORA",
    "IGNORE_INDEX",
    "ON_EXHAUSTED",
    "ByteTokenizer",
    "ARITHMETIC",
    "GENERATED",
    "REVERSE",
    "REVERSE_LONG",
    "REVERSE_LONG_LENGTHS",
    "DATA_FORMATS",
    "ChatEncoder",
    "ChatRunData",
    "ChatLoader",
    "ChatTemplate",
    "DataConfig",
    "DataError",
    "DevicePrefetcher",
    "DocumentIndex",
    "Documents",
    "Encoded",
    "HFTokenizer",
    "ImageDataset",
    "ImageLoader",
    "MixtureLoader",
    "MixturePart",
    "MixtureRule",
    "MixtureSource",
    "PackedLoader",
    "PackingPlan",
    "Origin",
    "Pair",
    "PreferenceLoader",
    "PreparedSequences",
    "PreparedShards",
    "Rows",
    "RunData",
    "SequenceIndex",
    "ShardIndex",
    "Tokenizer",
    "__version__",
    "bpe_tokenizer",
    "cache_dir",
    "arithmetic_rows",
    "reverse_rows",
    "reverse_long_rows",
    "chat_validation_batches",
    "local_cache_folder",
    "check_data_config",
    "check_local_source",
    "check_local_sources",
    "check_max_tokens",
    "check_mixture",
    "check_run_tokenizer",
    "check_template",
    "check_tokenizer",
    "compressed_files",
    "compressions_of",
    "config_tokenizer",
    "config_vocab",
    "describe_sources",
    "dtype_for_vocab",
    "encode_prompts",
    "exclude_ranges",
    "gpt2_tokenizer",
    "image_batches",
    "left_out_note",
    "left_out_summary",
    "load_digits",
    "load_documents",
    "load_image_dataset",
    "load_index",
    "load_rows",
    "load_sequences",
    "load_source",
    "load_tokenizer",
    "mixture_validation_batches",
    "prefetch_to_device",
    "prepare_builtin",
    "prepare_arithmetic",
    "prepare_generated",
    "prepare_chat_data",
    "prepare_chat_run_data",
    "prepare_image_run_data",
    "prepare_mixture_run_data",
    "prepare_run",
    "prepare_run_data",
    "prepare_shards",
    "pretokenize",
    "random_batch",
    "READ_IN",
    "read_elsewhere",
    "read_in",
    "restore_loader_state",
    "run_loader",
    "run_sources",
    "run_tokenizer",
    "same_tokenizer",
    "save_tokenizer",
    "train_bpe",
    "truncation_summary",
    "validation_batches",
    "write_sequences",
]
