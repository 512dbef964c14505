/*
 * The chat's screens: set-up (who I am, which name service and relays), the contact list
 * (with my NAME#FINGERPRINT to share and a field to add one), and a conversation. Each
 * screen is a function of the state it shows and the callbacks it calls; only [ChatApp]
 * knows the ViewModel.
 */
package dev.msocket.samples.android.chat

import android.content.ClipData
import androidx.activity.compose.BackHandler
import androidx.compose.foundation.clickable
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.PaddingValues
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.layout.widthIn
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.lazy.rememberLazyListState
import androidx.compose.foundation.shape.CircleShape
import androidx.compose.foundation.shape.RoundedCornerShape
import androidx.compose.foundation.text.selection.SelectionContainer
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.ListItem
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.SnackbarHost
import androidx.compose.material3.SnackbarHostState
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.platform.ClipEntry
import androidx.compose.ui.platform.LocalClipboard
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.text.input.ImeAction
import androidx.compose.ui.text.input.KeyboardType
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.ui.text.style.TextAlign
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.viewmodel.compose.viewModel
import java.text.DateFormat
import java.util.Date
import kotlinx.coroutines.launch
import dev.msocket.samples.chat.Contact

@Composable
fun ChatApp(vm: ChatViewModel = viewModel()) {
    val state by vm.state.collectAsStateWithLifecycle()
    val snackbar = remember { SnackbarHostState() }
    LaunchedEffect(state.message) {
        state.message?.let {
            snackbar.showSnackbar(it)
            vm.messageShown()
        }
    }
    // The open conversation survives rotation and process death with the screen.
    var open by rememberSaveable { mutableStateOf<String?>(null) }
    val contact = open
    when {
        state.phase != Phase.RUNNING -> SetupScreen(
            initial = state.settings,
            starting = state.phase == Phase.STARTING,
            error = state.setupError,
            onStart = vm::start,
        )
        contact == null -> ContactsScreen(
            me = state.me,
            contacts = state.contacts,
            online = state.online,
            lastText = { state.conversation(it).lastBubbleText() },
            snackbar = snackbar,
            onOpen = { open = it },
            onAdd = vm::addContact,
            onStop = vm::stop,
        )
        else -> {
            BackHandler { open = null }
            ConversationScreen(
                contact = contact,
                online = contact in state.online,
                items = state.conversation(contact),
                snackbar = snackbar,
                onSend = { vm.send(contact, it) },
                onBack = { open = null },
            )
        }
    }
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun SetupScreen(initial: ChatSettings, starting: Boolean, error: String?, onStart: (ChatSettings) -> Unit) {
    var me by rememberSaveable { mutableStateOf(initial.me) }
    var names by rememberSaveable { mutableStateOf(initial.namesUrl) }
    var relays by rememberSaveable { mutableStateOf(initial.relays) }
    Scaffold(topBar = { TopAppBar(title = { Text("msocket chat") }) }) { padding ->
        Column(
            Modifier.padding(padding).padding(16.dp).fillMaxSize().imePadding(),
            verticalArrangement = Arrangement.spacedBy(12.dp),
        ) {
            OutlinedTextField(
                value = me, onValueChange = { me = it }, label = { Text("My name") },
                supportingText = { Text("What others reach you by, with your key's fingerprint") },
                singleLine = true, modifier = Modifier.fillMaxWidth(),
            )
            OutlinedTextField(
                value = names, onValueChange = { names = it }, label = { Text("Name service") },
                placeholder = { Text("tcp://names.example:7450") },
                singleLine = true, modifier = Modifier.fillMaxWidth(),
                keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Uri),
            )
            OutlinedTextField(
                value = relays, onValueChange = { relays = it }, label = { Text("Relays (optional)") },
                placeholder = { Text("relay.example:7451, ...") },
                supportingText = { Text("To be reachable behind NAT") },
                modifier = Modifier.fillMaxWidth(),
            )
            error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
            Row(verticalAlignment = Alignment.CenterVertically) {
                Button(
                    onClick = { onStart(ChatSettings(me, names, relays)) },
                    enabled = !starting && me.isNotBlank() && names.isNotBlank(),
                ) { Text("Start") }
                if (starting) {
                    Spacer(Modifier.size(16.dp))
                    CircularProgressIndicator(Modifier.size(24.dp))
                }
            }
        }
    }
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun ContactsScreen(
    me: String?,
    contacts: List<Contact>,
    online: Set<String>,
    lastText: (String) -> String?,
    snackbar: SnackbarHostState,
    onOpen: (String) -> Unit,
    onAdd: (String) -> Unit,
    onStop: () -> Unit,
) {
    var spec by rememberSaveable { mutableStateOf("") }
    Scaffold(
        topBar = {
            TopAppBar(
                title = { Text("Contacts") },
                actions = { TextButton(onClick = onStop) { Text("Stop") } },
            )
        },
        snackbarHost = { SnackbarHost(snackbar) },
    ) { padding ->
        Column(Modifier.padding(padding).fillMaxSize().imePadding()) {
            me?.let { MyIdentity(it) }
            Row(Modifier.padding(horizontal = 16.dp), verticalAlignment = Alignment.CenterVertically) {
                OutlinedTextField(
                    value = spec, onValueChange = { spec = it }, label = { Text("Add NAME#FINGERPRINT") },
                    singleLine = true, modifier = Modifier.weight(1f),
                    keyboardOptions = KeyboardOptions(imeAction = ImeAction.Done),
                )
                TextButton(
                    onClick = {
                        onAdd(spec.trim())
                        spec = ""
                    },
                    enabled = spec.contains('#'),
                ) { Text("Add") }
            }
            LazyColumn(Modifier.fillMaxSize()) {
                items(contacts, key = { it.name }) { c ->
                    ListItem(
                        headlineContent = { Text(c.name) },
                        supportingContent = { Text(lastText(c.name) ?: c.fingerprint, maxLines = 1) },
                        leadingContent = { OnlineDot(c.name in online) },
                        modifier = Modifier.clickable { onOpen(c.name) },
                    )
                    HorizontalDivider()
                }
            }
        }
    }
}

/** My `NAME#FINGERPRINT`, selectable and copied with one tap, for others to add. */
@Composable
private fun MyIdentity(me: String) {
    val clipboard = LocalClipboard.current
    val scope = rememberCoroutineScope()
    Card(Modifier.padding(16.dp).fillMaxWidth()) {
        Column(Modifier.padding(12.dp)) {
            Text("Others add you as", style = MaterialTheme.typography.labelMedium)
            SelectionContainer {
                Text(me, fontFamily = FontFamily.Monospace, style = MaterialTheme.typography.bodySmall)
            }
            TextButton(onClick = {
                scope.launch { clipboard.setClipEntry(ClipEntry(ClipData.newPlainText("msocket contact", me))) }
            }) { Text("Copy") }
        }
    }
}

@Composable
private fun OnlineDot(online: Boolean) {
    Surface(
        shape = CircleShape,
        color = if (online) Color(0xFF2E7D32) else MaterialTheme.colorScheme.outlineVariant,
        modifier = Modifier.size(10.dp),
    ) {}
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun ConversationScreen(
    contact: String,
    online: Boolean,
    items: List<ChatItem>,
    snackbar: SnackbarHostState,
    onSend: (String) -> Unit,
    onBack: () -> Unit,
) {
    var draft by rememberSaveable(contact) { mutableStateOf("") }
    val list = rememberLazyListState()
    LaunchedEffect(items.size) {
        if (items.isNotEmpty()) list.animateScrollToItem(items.lastIndex)
    }
    Scaffold(
        topBar = {
            TopAppBar(
                title = {
                    Column {
                        Text(contact)
                        Text(if (online) "connected" else "not connected", style = MaterialTheme.typography.labelSmall)
                    }
                },
                navigationIcon = { TextButton(onClick = onBack) { Text("Back") } },
            )
        },
        snackbarHost = { SnackbarHost(snackbar) },
    ) { padding ->
        Column(Modifier.padding(padding).fillMaxSize().imePadding()) {
            LazyColumn(
                state = list,
                modifier = Modifier.weight(1f).fillMaxWidth(),
                contentPadding = PaddingValues(horizontal = 12.dp, vertical = 8.dp),
                verticalArrangement = Arrangement.spacedBy(4.dp),
            ) {
                items(items, key = { it.key }) { item ->
                    when (item) {
                        is ChatItem.Bubble -> MessageBubble(item)
                        is ChatItem.Note -> Text(
                            item.text,
                            style = MaterialTheme.typography.labelSmall,
                            color = Color.Gray,
                            textAlign = TextAlign.Center,
                            modifier = Modifier.fillMaxWidth().padding(vertical = 2.dp),
                        )
                    }
                }
            }
            Row(Modifier.padding(8.dp), verticalAlignment = Alignment.CenterVertically) {
                OutlinedTextField(
                    value = draft, onValueChange = { draft = it }, placeholder = { Text("Message") },
                    modifier = Modifier.weight(1f), maxLines = 4,
                )
                TextButton(
                    onClick = {
                        onSend(draft)
                        draft = ""
                    },
                    enabled = draft.isNotBlank(),
                ) { Text("Send") }
            }
        }
    }
}

/** A message: ours on the right with ✓ (sent) or ✓✓ (delivered), theirs on the left. */
@Composable
private fun MessageBubble(item: ChatItem.Bubble) {
    val m = item.message
    val time = remember(m.sentAt) { DateFormat.getTimeInstance(DateFormat.SHORT).format(Date(m.sentAt)) }
    Row(Modifier.fillMaxWidth(), horizontalArrangement = if (m.outgoing) Arrangement.End else Arrangement.Start) {
        Surface(
            shape = RoundedCornerShape(16.dp),
            color = if (m.outgoing) MaterialTheme.colorScheme.primaryContainer else MaterialTheme.colorScheme.surfaceVariant,
            modifier = Modifier.widthIn(max = 300.dp),
        ) {
            Column(Modifier.padding(horizontal = 12.dp, vertical = 8.dp)) {
                Text(m.text)
                Text(
                    if (m.outgoing) "$time ${if (item.delivered) "✓✓" else "✓"}" else time,
                    style = MaterialTheme.typography.labelSmall,
                    color = MaterialTheme.colorScheme.onSurfaceVariant,
                    modifier = Modifier.align(Alignment.End),
                )
            }
        }
    }
}

private fun List<ChatItem>.lastBubbleText(): String? =
    lastOrNull { it is ChatItem.Bubble }?.let { (it as ChatItem.Bubble).message.text }
