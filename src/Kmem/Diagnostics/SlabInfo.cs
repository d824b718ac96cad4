using System.Globalization;
using System.Text;
using Kmem.Slab;

namespace Kmem;

/// <summary>One line of <see cref="SlabInfo"/>: a cache and its statistics.</summary>
public sealed record SlabInfoEntry(string Name, SlabCacheStatistics Statistics);

/// <summary>Every live cache's statistics at once, as /proc/slabinfo shows them.</summary>
public static class SlabInfo
{
    /// <summary>
    /// Statistics of every live cache. <paramref name="includeUnused"/> false leaves out
    /// caches that hold no slab and never held one.
    /// </summary>
    public static IReadOnlyList<SlabInfoEntry> Snapshot(bool includeUnused = false) =>
        [.. SlabCacheRegistry.Snapshot()
            .Where(c => !c.IsDisposed)
            .Select(c => new SlabInfoEntry(c.Name, c.GetStatistics()))
            .Where(e => includeUnused || e.Statistics.SlabsAllocated > 0)];

    /// <summary>A text table in the spirit of /proc/slabinfo.</summary>
    public static string Format(IReadOnlyList<SlabInfoEntry>? entries = null)
    {
        entries ??= Snapshot();
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"{"# name",-24} {"<active_objs>",13} {"<num_objs>",10} {"<objsize>",9} {"<objperslab>",12} {"<slabsize>",10} {"<num_slabs>",11} {"<bytes>",12} {"<cached>",8} {"<aliases>",9} {"<ctor>",10} {"<dtor>",10}");
        foreach (var (name, s) in entries)
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"{name,-24} {s.ActiveObjects,13} {s.TotalObjects,10} {s.ObjectSize,9} {s.ObjectsPerSlab,12} {s.SlabSize,10} {s.Slabs,11} {s.BytesHeld,12} {s.CachedObjects,8} {s.Aliases,9} {s.ConstructorCalls,10} {s.DestructorCalls,10}");
        }
        sb.AppendLine(CultureInfo.InvariantCulture, $"# pages held from the OS: {Pages.BytesHeld} bytes (large kmalloc: {Kmalloc.LargeBytes})");
        return sb.ToString();
    }
}
