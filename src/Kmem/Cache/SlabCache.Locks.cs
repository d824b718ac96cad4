using Kmem.Locking;

namespace Kmem;

public sealed unsafe partial class SlabCache
{
    /// <summary>
    /// The figures of this cache's locks (of its root's, for an alias), in lock order:
    /// sheaf_drain, barn_lock, list_lock, sheaf_table.
    /// </summary>
    public IReadOnlyList<LockStatistics> GetLockStatistics()
    {
        SlabCache r = _root;
        return [r._drainLock.GetStatistics(), r._barn.Lock.GetStatistics(), r._listLock.GetStatistics(), r._sheafTable.Lock.GetStatistics()];
    }
}
