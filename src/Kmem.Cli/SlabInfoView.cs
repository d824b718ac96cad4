using Spectre.Console;

namespace Kmem.Cli;

/// <summary>Renders <see cref="SlabInfo"/> entries as a Spectre table.</summary>
internal static class SlabInfoView
{
    public static Table Render(IReadOnlyList<SlabInfoEntry> entries, string title)
    {
        var table = new Table().Title(title).Border(TableBorder.Rounded);
        foreach (string column in new[] { "cache", "object size", "objs/slab", "active objs", "total objs", "slabs", "bytes", "cached", "aliases", "ctor / dtor" })
            table.AddColumn(new TableColumn(column).RightAligned());
        table.Columns[0].LeftAligned();
        foreach (var (name, s) in entries)
        {
            table.AddRow(name, $"{s.ObjectSize}", $"{s.ObjectsPerSlab}", $"{s.ActiveObjects:N0}", $"{s.TotalObjects:N0}",
                $"{s.Slabs:N0}", Bytes(s.BytesHeld), $"{s.CachedObjects:N0}", $"{s.Aliases}",
                s.ConstructorCalls + s.DestructorCalls == 0 ? "-" : $"{s.ConstructorCalls:N0} / {s.DestructorCalls:N0}");
        }
        return table;
    }

    public static string Bytes(long bytes) => bytes switch
    {
        >= 1 << 30 => $"{bytes / (double)(1 << 30):F2} GiB",
        >= 1 << 20 => $"{bytes / (double)(1 << 20):F2} MiB",
        >= 1 << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };
}
