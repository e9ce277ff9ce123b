"""Local memory: `MemoryManager`, configuration (`memory_source`, `load_config`), LLM tools.

`MemorySurface` is the public memory API shared with the cluster client.
"""

from memcluster.config import Config, load_config, memory_source
from memcluster.manager.memory_manager import MemoryManager
from memcluster.manager.surface import MemorySurface

__all__ = ["Config", "MemoryManager", "MemorySurface", "load_config", "memory_source"]
