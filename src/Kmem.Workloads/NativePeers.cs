using System.Runtime.InteropServices;

namespace Kmem.Workloads;

/// <summary>
/// A C allocator loaded into this process with <see cref="NativeLibrary"/> and called through
/// <c>SuppressGCTransition</c> function pointers, so that every peer pays the same call.
/// Loaded with RTLD_LOCAL: it serves only these calls and replaces nobody's malloc.
/// </summary>
public sealed unsafe class NativePeer
{
    private NativePeer(string name, nint malloc, nint free, nint realloc)
    {
        Name = name;
        Malloc = (delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*>)malloc;
        Free = (delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void>)free;
        Realloc = (delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, nuint, void*>)realloc;
    }

    public string Name { get; }

    public delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*> Malloc { get; }

    public delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void> Free { get; }

    public delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, nuint, void*> Realloc { get; }

    /// <summary>Debian's packages: libc6, libmimalloc2.0, libjemalloc2, libtcmalloc-minimal4.</summary>
    private static readonly (string Name, string Library, string Prefix)[] s_known =
    [
        ("glibc", "libc.so.6", ""),
        ("mimalloc", "libmimalloc.so.2", "mi_"),
        ("jemalloc", "libjemalloc.so.2", ""),
        ("tcmalloc", "libtcmalloc_minimal.so.4", "tc_"),
    ];

    /// <summary>
    /// The peers this machine has; <paramref name="missing"/> says which are not and why
    /// (jemalloc needs <c>GLIBC_TUNABLES=glibc.rtld.optional_static_tls=65536</c> to load
    /// after start).
    /// </summary>
    public static IReadOnlyList<NativePeer> Load(out IReadOnlyList<string> missing)
    {
        var found = new List<NativePeer>();
        var absent = new List<string>();
        if (!OperatingSystem.IsLinux())
        {
            missing = ["every C peer: Linux only"];
            return found;
        }
        foreach (var (name, library, prefix) in s_known)
        {
            try
            {
                nint h = NativeLibrary.Load(library);
                found.Add(new NativePeer(name,
                    NativeLibrary.GetExport(h, prefix + "malloc"),
                    NativeLibrary.GetExport(h, prefix + "free"),
                    NativeLibrary.GetExport(h, prefix + "realloc")));
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                absent.Add($"{name} ({library}): {e.Message.Split('\n')[0]}");
            }
        }
        missing = absent;
        return found;
    }
}
