//! A raw, minimal protocol client (the bench must not out-eat the agent), and the wait for
//! an agent to serve.

use super::*;

pub struct Conn {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
    pub line: String,
    pub req: Vec<u8>,
    pub expect: String,
}

impl Conn {
    pub fn open(socket: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut c = Self {
            reader: BufReader::with_capacity(8192, stream),
            writer,
            line: String::with_capacity(1024),
            req: Vec::with_capacity(128),
            expect: String::with_capacity(64),
        };
        c.writer
            .write_all(b"{\"op\":\"hello\",\"version\":1,\"id\":0}\n")?;
        c.read_line()?;
        if !c.line.contains("\"ok\":true") {
            return Err(std::io::Error::other(format!(
                "hello refused: {}",
                c.line.trim()
            )));
        }
        Ok(c)
    }

    pub fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "agent closed the connection",
            ));
        }
        Ok(())
    }

    /// One `get` round trip; checks the reply echoes `id` and is ok.
    pub fn get(&mut self, id: u64) -> std::io::Result<()> {
        self.req.clear();
        let _ = writeln!(
            self.req,
            "{{\"op\":\"get\",\"name\":\"claude\",\"id\":{id}}}"
        );
        self.writer.write_all(&self.req)?;
        self.read_line()?;
        self.expect.clear();
        let _ = write!(self.expect, "{{\"id\":{id},\"ok\":true,");
        if !self.line.starts_with(&self.expect) {
            return Err(std::io::Error::other(format!(
                "unexpected reply to get {id}: {:.200}",
                self.line.trim()
            )));
        }
        Ok(())
    }

    /// The full `result` of a `get` (for verification only).
    pub fn get_result(&mut self, id: u64) -> std::io::Result<Value> {
        self.get(id)?;
        let v: Value = serde_json::from_str(&self.line).map_err(std::io::Error::other)?;
        Ok(v["result"].clone())
    }
}

pub fn wait_for_agent(proc: &mut Proc, socket: &Path) -> Value {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        proc.check_alive();
        if let Ok(mut c) = Conn::open(socket) {
            if let Ok(r) = c.get_result(1) {
                return r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not serve {} within {STARTUP_TIMEOUT:?}; its log:\n{}",
            proc.name,
            socket.display(),
            fs::read_to_string(&proc.log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
}
