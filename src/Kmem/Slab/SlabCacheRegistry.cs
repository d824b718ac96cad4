namespace Kmem.Slab;

/// <summary>
/// Every live cache by index (slab_caches): the slab header stores the index, so
/// kmalloc's Free and diagnostics go from an address to its cache without a lock.
/// Creation and disposal take <see cref="Lock"/> (class slab_mutex).
/// </summary>
internal static class SlabCacheRegistry
{
    private static readonly Lock s_lock = new();
    private static SlabCache?[] s_caches = new SlabCache?[64];

    /// <summary>The cache at <paramref name="index"/>; indexes come from slab headers, which outlive no cache.</summary>
    public static SlabCache Get(int index) => Volatile.Read(ref s_caches)[index]!;

    public static int Add(SlabCache cache)
    {
        lock (s_lock)
        {
            int i = Array.IndexOf(s_caches, null);
            if (i < 0)
            {
                i = s_caches.Length;
                var grown = new SlabCache?[i * 2];
                s_caches.CopyTo(grown, 0);
                Volatile.Write(ref s_caches, grown);
            }
            s_caches[i] = cache;
            return i;
        }
    }

    public static void Remove(int index)
    {
        lock (s_lock)
            s_caches[index] = null;
    }

    /// <summary>The live caches, in creation-slot order.</summary>
    public static List<SlabCache> Snapshot()
    {
        lock (s_lock)
            return [.. s_caches.OfType<SlabCache>()];
    }
}
