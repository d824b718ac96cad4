namespace Kmem.Locking;

/// <summary>
/// Every named lock, by class, for <see cref="LockStatistics.ByClass"/>. Held weakly: a
/// lock lives as long as its owner. Registration happens once per lock, when its owner
/// (a cache, an allocator) is built, never on an acquisition.
/// </summary>
/// <remarks>
/// Its gate is a plain monitor outside the lock order: it is held only to add to or copy
/// the list and never while taking another lock.
/// </remarks>
internal static class LockRegistry
{
    private static readonly object s_gate = new();
    private static readonly List<WeakReference<NamedLock>> s_locks = [];
    private static int s_pruneAt = 256;

    public static void Register(NamedLock l)
    {
        lock (s_gate)
        {
            if (s_locks.Count >= s_pruneAt)
            {
                s_locks.RemoveAll(w => !w.TryGetTarget(out _));
                s_pruneAt = Math.Max(256, s_locks.Count * 2);
            }
            s_locks.Add(new WeakReference<NamedLock>(l));
        }
    }

    public static IReadOnlyList<LockStatistics> ByClass()
    {
        var live = new List<NamedLock>();
        lock (s_gate)
        {
            foreach (WeakReference<NamedLock> w in s_locks)
            {
                if (w.TryGetTarget(out NamedLock? l))
                    live.Add(l);
            }
        }
        var byClass = new Dictionary<string, LockStatistics>(StringComparer.Ordinal);
        foreach (NamedLock l in live)
        {
            LockStatistics s = l.GetStatistics();
            byClass[l.ClassName] = byClass.TryGetValue(l.ClassName, out LockStatistics sum) ? sum.Add(s) : s;
        }
        return [.. byClass.Values.OrderByDescending(s => s.Contended).ThenByDescending(s => s.Acquired)];
    }
}
