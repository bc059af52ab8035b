// A Node script on the chat's JavaScript client: join a room, ask for a roll, print what comes back.
// npm install @chat/client ws; node roll.mjs ws://127.0.0.1:8000/ws lobby
import { ChatClient } from "@chat/client";
import { WebSocket } from "ws";

const [url = "ws://127.0.0.1:8000/ws", room = "lobby"] = process.argv.slice(2);
const client = new ChatClient(url, { room, name: "node-script", WebSocket });

client.on("state", ({ state, code, reason }) => console.log("state:", state, code ?? "", reason ?? ""));
client.on("presence", (frame) => {
  if (frame.event === "welcome") console.log(`joined ${frame.room} as ${frame.you}; online: ${client.users.join(", ")}`);
});
client.on("message", (frame) => {
  console.log(`${frame.name}: ${frame.message}${frame.reply_to ? ` (reply to ${frame.reply_to})` : ""}`);
  if (asked !== null && frame.reply_to === asked.id) client.close();
});

let asked = null;
asked = await client.send("!roll");
console.log("acknowledged as message", asked.id);
