# distls: a node's file on the shell path (SSH, `become`), the operations of src/atomic_file.rs
# with the same rules and messages (docs/security.md). Perl because a POSIX shell has no
# O_EXCL, O_NOFOLLOW or fchown, and perl-base is Essential on Debian and Ubuntu (only modules from
# perl-base are used; sha256sum from coreutils checks the written bytes through the file's fd).
# Each directory is opened O_NOFOLLOW|O_DIRECTORY and entered with fchdir, so every name below
# is looked up in the directory distls checked, as openat would.
#   resolve PATH | exists PATH | read PATH LIMIT | remove PATH | mkdir PATH MODE | rmdir PATH
#   write PATH LENGTH SHA256 MODE [LIKE]  (the bytes on stdin; MODE octal, "keep:MODE" = keep the
#                                          old file's mode and owner, MODE for a new file)
#   write-together PATH LENGTH SHA256 MODE [PATH LENGTH SHA256 MODE ...]  (the bytes one after
#                                          the other on stdin; all staged before any rename)
# Exit 0: done; 1: absent (exists); 2: refused or failed (stderr says why); 3: too large.
use strict;
use warnings;
use Fcntl qw(O_RDONLY O_RDWR O_CREAT O_EXCL O_NOFOLLOW O_DIRECTORY O_NONBLOCK :mode);
use IO::Handle;
use POSIX ();
use Errno ();

binmode STDIN;
binmode STDOUT;
my ($op, $path, @rest) = @ARGV;
my $euid = $>;
my @cleanup;
my $max_links = 40;
# Relative paths start here, whichever directory a walk entered since.
my $start_dir = POSIX::getcwd();

sub fail {
    $_->() for @cleanup;
    print STDERR @_, "\n";
    exit 2;
}

# Killed (a timeout, the SSH connection gone): no temp file with new bytes stays behind.
$SIG{$_} = sub { fail("interrupted; nothing more changed") } for qw(HUP TERM PIPE INT);

sub user_label {
    my ($uid) = @_;
    my $name = getpwuid($uid);
    return defined $name ? "$name (uid $uid)" : "uid $uid";
}

sub trusted_uid { return $_[0] == 0 || $_[0] == $euid }

sub owner_problem {
    my @st = @_;
    return trusted_uid($st[4]) ? undef : "is owned by " . user_label($st[4]);
}

sub dir_problem {
    my @st = @_;
    my $problem = owner_problem(@st);
    return $problem if defined $problem;
    my $mode = $st[2] & 07777;
    return ($mode & 022 && !($mode & 01000))
      ? sprintf("is writable by group or others (mode %04o)", $mode)
      : undef;
}

sub type_name {
    my ($mode) = @_;
    return S_ISDIR($mode) ? "a directory"
      : S_ISFIFO($mode) ? "a FIFO"
      : S_ISCHR($mode)  ? "a character device"
      : S_ISBLK($mode)  ? "a block device"
      : S_ISSOCK($mode) ? "a socket"
      : S_ISLNK($mode)  ? "a symbolic link"
      :                   "not a plain file";
}

sub refused_link {
    my ($link, $culprit, $why) = @_;
    my $me = user_label($euid);
    fail("$link: a symbolic link distls does not follow: $culprit $why; distls follows a link only when root or the user it runs as ($me) owns the link, its target and every directory on the way (docs/security.md)\n"
          . "  hint: check where it points (readlink -f $link); if that is the node's own file, replace the link with a copy of it (cp --remove-destination \"\$(readlink -f $link)\" $link) or have root own $culprit and the directories above it; otherwise remove the link");
}

sub join_path {
    my ($dir, $name) = @_;
    return $dir eq '/' ? "/$name" : "$dir/$name";
}

sub parent_of {
    my ($dir) = @_;
    $dir =~ s{/[^/]*$}{};
    return $dir eq '' ? '/' : $dir;
}

sub components { return grep { $_ ne '' && $_ ne '.' } split m{/}, $_[0] }

sub not_found {
    my ($where) = @_;
    exit 1 if $op eq 'exists';
    fail("$where: does not exist");
}

sub enter_dir {
    my ($name, $here) = @_;
    my $dh;
    if (!sysopen($dh, $name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)) {
        not_found($here) if $!{ENOENT};
        fail("$here: is not a directory") if $!{ENOTDIR};
        fail("$here: is a symbolic link that appeared while distls walked the path") if $!{ELOOP};
        fail("$here: $!");
    }
    chdir($dh) or fail("$here: $!");
    return $dh;
}

# Walks to the directory holding the path's last name and enters it (the cwd is that directory).
# Returns (its real path, the name, the first link followed or undef).
sub walk {
    my ($target, $follow_last) = @_;
    $follow_last = 1 unless defined $follow_last;
    $target = "$start_dir/$target" unless $target =~ m{^/};
    my @pending = reverse components($target);
    my $dh = enter_dir('/', '/');
    my $real = '/';
    my ($untrusted, $why);
    my $problem = dir_problem(stat($dh));
    ($untrusted, $why) = ('/', $problem) if defined $problem;
    my ($via, $links) = (undef, 0);
    while (@pending) {
        my $name = pop @pending;
        if ($name eq '..') {
            $dh = enter_dir('..', $real);
            $real = parent_of($real);
            next;
        }
        my $last = !@pending;
        my $here = join_path($real, $name);
        my @st = lstat($name);
        if (!@st) {
            fail("$here: a part of the path is not a directory") if $!{ENOTDIR};
            fail("$here: $!") unless $!{ENOENT};
            return ($real, $name, $via) if $last;
            not_found($here);
        }
        if (S_ISLNK($st[2]) && ($follow_last || !$last)) {
            my ($culprit, $reason) = defined $why ? ($untrusted, $why) : ($here, owner_problem(@st));
            refused_link($here, $culprit, $reason) if defined $reason;
            fail("$target: more than $max_links symbolic links on the way (a loop?)")
              if ++$links > $max_links;
            my $link = readlink($name);
            fail("$here: $!") unless defined $link;
            if ($link =~ m{^/}) {
                $dh = enter_dir('/', '/');
                $real = '/';
            }
            push @pending, reverse components($link);
            $via = $here unless defined $via;
            next;
        }
        return ($real, $name, $via) if $last;
        my $next = enter_dir($name, $here);
        if (!defined $why) {
            my $p = dir_problem(stat($next));
            ($untrusted, $why) = ($here, $p) if defined $p;
        }
        refused_link($via, $untrusted, $why) if defined $via && defined $why;
        ($dh, $real) = ($next, $here);
    }
    fail("$target: names a directory, not a file");
}

sub check_regular {
    my ($real, $via, @st) = @_;
    fail("$real: is not a regular file (" . type_name($st[2]) . "); distls reads and writes regular files only")
      unless S_ISREG($st[2]);
    if (defined $via) {
        my $problem = owner_problem(@st);
        refused_link($via, $real, $problem) if defined $problem;
    }
}

sub open_regular {
    my ($name, $real, $via, $flags) = @_;
    my $fh;
    if (!sysopen($fh, $name, $flags | O_NOFOLLOW | O_NONBLOCK)) {
        not_found($real) if $!{ENOENT};
        fail("$real: is a symbolic link that appeared while distls opened it") if $!{ELOOP};
        fail("$real: $!");
    }
    check_regular($real, $via, stat($fh));
    return $fh;
}

sub sync_cwd {
    sysopen(my $dh, '.', O_RDONLY | O_DIRECTORY) or fail("cannot open the directory: $!");
    $dh->sync or fail("cannot fsync the directory: $!");
}

sub write_all {
    my ($fh, $bytes, $real) = @_;
    my $done = 0;
    while ($done < length $bytes) {
        my $n = syswrite($fh, $bytes, length($bytes) - $done, $done);
        fail("$real: cannot write: $!") unless defined $n;
        $done += $n;
    }
}

# sha256 of what the fd holds, read through the fd itself.
sub sha256_of_fd {
    my ($fh, $real) = @_;
    sysseek($fh, 0, 0) or fail("$real: cannot seek: $!");
    my $pid = open(my $out, '-|');
    fail("cannot fork: $!") unless defined $pid;
    if ($pid == 0) {
        open(STDIN, '<&', $fh) or POSIX::_exit(97);
        exec('sha256sum') or POSIX::_exit(98);
    }
    local $/;
    my $line = <$out>;
    close($out);
    fail("$real: sha256sum failed (status $?)") if $?;
    return ($line // '') =~ /^([0-9a-f]{64})/ ? $1 : '';
}

sub random_hex {
    open(my $r, '<', '/dev/urandom') or fail("cannot open /dev/urandom: $!");
    binmode $r;
    my $raw = '';
    sysread($r, $raw, 12) == 12 or fail("cannot read /dev/urandom: $!");
    return unpack('H*', $raw);
}

# Reads exactly $length bytes from stdin (a stream cut short changes nothing).
sub read_input {
    my ($length, $what) = @_;
    my $bytes = '';
    while (length($bytes) < $length) {
        my $n = sysread(STDIN, $bytes, $length - length($bytes), length $bytes);
        fail("$what: cannot read the new content: $!") unless defined $n;
        last if $n == 0;
    }
    fail("$what: received " . length($bytes) . " of $length bytes (the connection was cut?); nothing changed")
      unless length($bytes) == $length;
    return $bytes;
}

sub input_ends {
    my ($what) = @_;
    my $extra = '';
    my $n = sysread(STDIN, $extra, 1);
    fail("$what: cannot read the new content: $!") unless defined $n;
    fail("$what: received more than the announced bytes; nothing changed") if $n;
}

# Writes the new file beside $target, owned, synced and verified, not yet renamed over it.
# Returns what the rename needs; a failure from here on removes the temp file.
sub stage_write {
    my ($target, $length, $sha, $mode_spec, $like, $bytes) = @_;
    my ($keep, $mode) = $mode_spec =~ /^(keep:)?([0-7]+)$/ or fail("bad mode $mode_spec");
    $mode = oct($mode);
    my ($uid, $gid);
    if (defined $like) {
        my ($like_dir, $like_name, $like_via) = walk($like);
        my $fh = open_regular($like_name, join_path($like_dir, $like_name), $like_via, O_RDONLY);
        ($uid, $gid) = (stat($fh))[4, 5];
    }
    my ($dir, $name, $via) = walk($target);
    sysopen(my $dh, '.', O_RDONLY | O_DIRECTORY) or fail("$dir: $!");
    my $real = join_path($dir, $name);
    my @old = lstat($name);
    fail("$real: $!") if !@old && !$!{ENOENT};
    if (@old) {
        check_regular($real, $via, @old);
        ($uid, $gid, $mode) = ($old[4], $old[5], $old[2] & 07777) if $keep;
    }
    ($uid, $gid) = ($euid, (split ' ', $))[0]) unless defined $uid;
    my ($temp, $fh);
    for (1 .. 8) {
        $temp = ".$name.distls-" . random_hex();
        last if sysopen($fh, $temp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
        fail("$real: cannot create a temp file beside it: $!") unless $!{EEXIST};
        undef $fh;
    }
    fail("$real: cannot create a temp file with a fresh name beside it") unless $fh;
    my @mine = stat($fh);
    push @cleanup, sub {
        chdir($dh) or return;
        my @there = lstat($temp);
        unlink($temp) if @there && $there[0] == $mine[0] && $there[1] == $mine[1];
    };
    write_all($fh, $bytes, $real);
    if ($mine[4] != $uid || $mine[5] != $gid) {
        # Owner first: fchown may clear set-id bits, the fchmod below puts the mode back.
        chown($uid, $gid, $fh) or fail("$real: cannot give the new file the owner $uid:$gid: $!");
    }
    chmod($mode, $fh) or fail("$real: cannot set the mode: $!");
    $fh->sync or fail("$real: cannot fsync: $!");
    my $size = (stat($fh))[7];
    fail("$real: the new file does not read back as written ($size of $length bytes); nothing changed")
      unless $size == $length && sha256_of_fd($fh, $real) eq $sha;
    return { dh => $dh, temp => $temp, name => $name, real => $real, dev => $mine[0], ino => $mine[1] };
}

# Renames staged files over their names one right after the other, then checks each name holds
# the file distls wrote and syncs its directory.
sub commit_staged {
    my @staged = @_;
    my %seen;
    for my $s (@staged) {
        fail("$s->{real}: named twice in one change") if $seen{$s->{real}}++;
    }
    my @done;
    for my $s (@staged) {
        if (!(chdir($s->{dh}) && rename($s->{temp}, $s->{name}))) {
            my $why = "$s->{real}: $!";
            # The ones renamed already stay: checked, synced and named, so the caller knows.
            settle($_) for @done;
            $why .= " (already replaced before it: " . join(', ', map { $_->{real} } @done) . ")" if @done;
            fail($why);
        }
        shift @cleanup;
        push @done, $s;
    }
    # Every file is checked and synced; the first problem is the one reported.
    my @problems = grep { defined } map { settle($_) } @staged;
    fail($problems[0]) if @problems;
}

# After the rename: the name holds the file distls wrote, and the entry is on disk. Returns the
# problem, or undef.
sub settle {
    my ($s) = @_;
    chdir($s->{dh}) or return "$s->{real}: $!";
    my @now = lstat($s->{name});
    return "$s->{real}: was replaced by someone else while distls wrote it"
      unless @now && $now[0] == $s->{dev} && $now[1] == $s->{ino};
    sysopen(my $dh, '.', O_RDONLY | O_DIRECTORY) or return "$s->{real}: cannot open the directory: $!";
    $dh->sync or return "$s->{real}: cannot fsync the directory: $!";
    return undef;
}

sub op_write {
    my ($length, $sha, $mode_spec, $like) = @rest;
    my $bytes = read_input($length, $path);
    input_ends($path);
    commit_staged(stage_write($path, $length, $sha, $mode_spec, $like, $bytes));
}

# write-together PATH LENGTH SHA256 MODE [PATH LENGTH SHA256 MODE ...]: the files' bytes one
# after the other on stdin; every file staged and verified before the first rename.
sub op_write_together {
    my @specs = ($path, @rest);
    fail("write-together: PATH LENGTH SHA256 MODE, repeated") if !@specs || @specs % 4;
    my @files;
    while (@specs) {
        my ($target, $length, $sha, $mode_spec) = splice(@specs, 0, 4);
        push @files, [$target, $length, $sha, $mode_spec, read_input($length, $target)];
    }
    input_ends($path);
    my @staged = map { stage_write($_->[0], $_->[1], $_->[2], $_->[3], undef, $_->[4]) } @files;
    commit_staged(@staged);
}

if ($op eq 'resolve') {
    my ($dir, $name) = walk($path);
    my @st = lstat($name);
    not_found(join_path($dir, $name)) unless @st;
    print join_path($dir, $name);
} elsif ($op eq 'exists') {
    my ($dir, $name) = walk($path);
    my @st = lstat($name);
    exit(@st ? 0 : 1);
} elsif ($op eq 'read') {
    my ($limit) = @rest;
    my ($dir, $name, $via) = walk($path);
    my $real = join_path($dir, $name);
    my $fh = open_regular($name, $real, $via, O_RDONLY);
    my $size = (stat($fh))[7];
    if ($size > $limit) { print STDERR "$size $limit\n"; exit 3 }
    my $bytes = '';
    while (1) {
        my $n = sysread($fh, $bytes, 65536, length $bytes);
        fail("$real: $!") unless defined $n;
        last if $n == 0;
        if (length($bytes) > $limit) { print STDERR length($bytes), " $limit\n"; exit 3 }
    }
    write_all(\*STDOUT, $bytes, 'stdout');
} elsif ($op eq 'remove') {
    my ($dir, $name) = walk($path, 0);
    my @st = lstat($name);
    exit 0 unless @st;
    fail(join_path($dir, $name) . ": is a directory, not a file") if S_ISDIR($st[2]);
    unlink($name) or fail(join_path($dir, $name) . ": $!");
    sync_cwd();
} elsif ($op eq 'mkdir') {
    my ($mode) = @rest;
    my ($dir, $name) = walk($path, 0);
    my $real = join_path($dir, $name);
    my $created = mkdir($name, 0700);
    fail("$real: $!") unless $created || $!{EEXIST};
    my $dh;
    sysopen($dh, $name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) or fail("$real: is not a directory");
    if ($created) {
        chmod(oct($mode), $dh) or fail("$real: $!");
        sync_cwd();
    }
    print $created ? "created" : "exists";
} elsif ($op eq 'rmdir') {
    my ($dir, $name) = walk($path, 0);
    if (rmdir($name)) {
        sync_cwd();
    } elsif (!($!{ENOENT} || $!{ENOTEMPTY} || $!{EEXIST})) {
        fail(join_path($dir, $name) . ": $!");
    }
} elsif ($op eq 'write') {
    op_write();
} elsif ($op eq 'write-together') {
    op_write_together();
} else {
    fail("unknown operation $op");
}
exit 0;
